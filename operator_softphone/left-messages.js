/* Messages left when nobody could answer, until an operator marks them handled, and whether the
 * shop's mail about each went out.
 */
import { $, el, safeLink } from './dom.js';
import { t } from './i18n.js';

// Whether the shop's mail about a left message went out (it is retried for about a day).
function showMailState(item, mail) {
  const line = item.querySelector('[data-testid="op-message-mail"]');
  line.dataset.mailState = (mail && mail.state) || '';
  line.hidden = !mail;
  if (!mail) return;
  const texts = {
    pending: t('mail_pending'), sent: t('mail_sent'),
    retrying: t('mail_retrying', { attempts: mail.attempts }), failed: t('mail_failed', { attempts: mail.attempts }),
  };
  const said = Object.hasOwn(texts, mail.state) ? texts[mail.state] : String(mail.state);
  line.textContent = mail.error && (mail.state === 'retrying' || mail.state === 'failed') ? `${said}: ${mail.error}` : said;
}

/** The left messages, on `socket`; `alerts` tells of a new one. */
export function createLeftMessages({ socket, alerts }) {
  const { send } = socket;
  const leftList = $('left-messages');
  const noMessages = $('no-messages');

  function addLeftMessage(message, notify) {
    const handled = el('button', { type: 'button' }, t('handled'));
    handled.addEventListener('click', () => send({ type: 'message.handled', id: message.id }));
    const contact = [message.name, message.email, message.phone].filter(Boolean).map(String).join(' · ');
    const item = el('li', {},
      el('strong', {}, contact || t('visitor')),
      el('p', { class: 'meta' }, [message.site || '', new Date(message.at).toLocaleString(document.documentElement.lang || undefined),
        message.call_id ? t('tried_to_call') : ''].filter(Boolean).join(' · ')),
      el('p', {}, String(message.text)),
      message.page ? el('p', { class: 'meta' }, safeLink(message.page)) : null,
      el('p', { class: 'meta', 'data-testid': 'op-message-mail' }),
      handled);
    item.dataset.messageId = String(message.id);
    showMailState(item, message.mail);
    leftList.prepend(item);
    noMessages.hidden = true;
    if (notify) alerts.chatAlert(t('new_left_message'), `${contact}: ${message.text}`);
  }

  function itemOf(id) {
    return leftList.querySelector(`[data-message-id="${CSS.escape(String(id))}"]`);
  }

  socket.on('hello', (frame) => {
    leftList.replaceChildren();
    for (const message of (frame.left_messages || []).slice().reverse()) addLeftMessage(message, false);
    noMessages.hidden = leftList.children.length > 0;
  });
  socket.on('message.new', (frame) => {
    if (frame.message) addLeftMessage(frame.message, true);
  });
  socket.on('message.mail', (frame) => {
    const item = itemOf(frame.id);
    if (item) showMailState(item, frame.mail);
  });
  socket.on('message.handled', (frame) => {
    const item = itemOf(frame.id);
    if (item) item.remove();
    noMessages.hidden = leftList.children.length > 0;
  });
}
