/* Call-back requests (op-callbacks): shoppers who could not get through and left a number, with the
 * outcome the operator records; and ringing a visitor who is on the site now (from a request, or
 * from a board row in board.js), whose progress the server tells as visitor_call.state.
 */
import { $, el, safeLink } from './dom.js';
import { t } from './i18n.js';

const outcomes = () => ({ reached: t('outcome_reached'), no_answer: t('outcome_no_answer'),
  wrong_number: t('outcome_wrong_number') });

/** The requests and the visitor ringing, on `socket`; `alerts` tells of a new request. */
export function createCallbacks({ socket, alerts }) {
  const { send } = socket;
  const list = $('callbacks');
  const empty = $('no-callbacks');
  const ringStatus = $('visitor-call-status');
  // Visitors with an open page of the site now, from the board: "<site id>/<visitor id>".
  const onSite = new Set();
  // The ring of a visitor this softphone started, while it rings: { id }
  let ringing = null;

  const key = (siteId, visitorId) => `${siteId}/${visitorId}`;

  function row(callback) {
    const call = el('button', { type: 'button', 'data-testid': 'op-callback-call' }, t('callback_call'));
    call.addEventListener('click', () => {
      if (!send({ type: 'visitor.call', visitor_id: String(callback.visitor_id), site_id: callback.site_id,
        callback_id: String(callback.id) })) alerts.showAlert(t('alert_offline_invite'));
    });
    const outcome = el('select', { name: 'outcome', 'aria-label': t('callback_done') },
      ...Object.entries(outcomes()).map(([name, text]) => el('option', { value: name }, text)));
    const done = el('form', { 'data-testid': 'op-callback-done', class: 'inline' }, outcome,
      el('button', { type: 'submit' }, t('callback_done')));
    done.addEventListener('submit', (event) => {
      event.preventDefault();
      if (!send({ type: 'callback.done', id: String(callback.id), outcome: outcome.value })) {
        alerts.showAlert(t('alert_offline_invite'));
      }
    });
    const item = el('li', {},
      el('strong', {}, String(callback.phone)),
      el('p', { class: 'meta' }, [String(callback.site || ''),
        new Date(callback.at).toLocaleString(document.documentElement.lang || undefined),
        callback.when ? t('callback_when_label', { when: String(callback.when) }) : ''].filter(Boolean).join(' · ')),
      callback.page ? el('p', { class: 'meta' }, safeLink(callback.page)) : null,
      el('p', { class: 'meta on-site' }, t('callback_on_site')),
      el('div', { class: 'actions' }, call, done));
    item.dataset.callbackId = String(callback.id);
    item.callback = callback;
    showOnSite(item, Boolean(callback.on_site));
    return item;
  }

  function showOnSite(item, here) {
    item.dataset.onSite = String(here);
    item.querySelector('.on-site').hidden = !here;
    item.querySelector('[data-testid="op-callback-call"]').disabled = !here || Boolean(ringing);
  }

  function refresh() {
    for (const item of list.children) {
      const { callback } = item;
      showOnSite(item, Boolean(callback.visitor_id) && onSite.has(key(callback.site_id, callback.visitor_id)));
    }
    empty.hidden = list.children.length > 0;
  }

  function itemOf(id) {
    return list.querySelector(`[data-callback-id="${CSS.escape(String(id))}"]`);
  }

  socket.on('hello', (frame) => {
    list.replaceChildren(...(frame.callbacks || []).map(row));
    ringing = null;
    ringStatus.hidden = true;
    empty.hidden = list.children.length > 0;
  });
  socket.on('callback.new', (frame) => {
    if (!frame.callback || itemOf(frame.callback.id)) return;
    list.prepend(row(frame.callback));
    empty.hidden = true;
    alerts.chatAlert(t('callbacks'), String(frame.callback.phone));
  });
  socket.on('callback.done', (frame) => {
    const item = itemOf(frame.id);
    if (item) item.remove();
    empty.hidden = list.children.length > 0;
  });
  socket.on('visitors', (frame) => {
    onSite.clear();
    for (const visitor of frame.visitors || []) {
      if (visitor.reachable) onSite.add(key(visitor.site_id, visitor.id));
    }
    refresh();
  });
  // The ring's progress: ringing, then answered (call.js takes the call), declined, no_answer or cancelled.
  socket.on('visitor_call.state', (frame) => {
    const texts = {
      ringing: t('visitor_ringing'), answered: t('visitor_answered'), declined: t('visitor_declined'),
      no_answer: t('visitor_no_answer'), cancelled: t('visitor_cancelled'),
    };
    ringing = frame.state === 'ringing' ? { id: String(frame.id) } : null;
    ringStatus.hidden = false;
    ringStatus.dataset.state = String(frame.state);
    ringStatus.textContent = Object.hasOwn(texts, frame.state) ? texts[frame.state] : String(frame.state);
    refresh();
  });
}
