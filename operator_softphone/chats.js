/* Chats: several at once, each with its messages and their ticks, what the visitor is typing, the
 * queue of chats nobody has taken, and canned replies.
 */
import { $, el, safeLink } from './dom.js';
import { t, fallbackTexts } from './i18n.js';

const TYPING_EVERY_MS = 2000;

/** How far a message got: sent < delivered < read. */
function rank(status) {
  return status === 'read' ? 2 : status === 'delivered' ? 1 : 0;
}

function visitorLabel(chat) {
  const visitor = chat.visitor || {};
  return String(visitor.name || visitor.email || visitor.phone
    || t('visitor_n', { id: String(visitor.token || chat.id).slice(0, 6) }));
}

function messageItem(message) {
  const item = el('li', { class: String(message.sender) });
  if (message.sender === 'operator' && message.operator) item.append(el('small', {}, String(message.operator.name)));
  item.append(String(message.text));
  if (message.sender === 'operator') {
    const status = message.status === 'read' ? t('tick_read') : message.status === 'delivered' ? t('tick_delivered') : t('tick_sent');
    item.append(el('small', { class: 'tick' }, status));
  }
  item.dataset.messageId = String(message.id);
  return item;
}

/** The softphone's chats, on `socket`; `alerts` tells of new chats and messages. */
export function createChats({ socket, alerts, onSelect }) {
  const { send } = socket;
  const { showAlert, chatAlert } = alerts;
  const chatList = $('chat-list');
  const chatCount = $('chat-count');
  const noChats = $('no-chats');
  const queueBox = $('queue-box');
  const queueList = $('queue');
  const chatPane = $('chat-pane');
  const chatHead = $('chat-head');
  const chatLog = $('chat-log');
  const chatPreview = $('chat-preview');
  const chatForm = $('chat-form');
  const chatInput = $('chat-input');
  const cannedSelect = $('canned');
  const offerCallButton = $('offer-call');
  const chatTransferTo = $('chat-transfer-to');
  const chatTransferButton = $('chat-transfer');
  const chatCloseButton = $('chat-close');
  const cannedList = $('canned-list');
  const cannedForm = $('canned-form');

  const chats = new Map(); // chat id → { chat, messages: Map(id → message), pending, tab, unread, preview }
  let selectedChat = null;
  let canned = [];
  let clientIds = 0;
  let lastTypingSent = 0;

  // ---- the chats -----------------------------------------------------------------------------

  function replaceChats(frame) {
    for (const id of Array.from(chats.keys())) removeChat(id, null);
    for (const item of frame.chats || []) addChat(item.chat, item.messages || [], false);
    renderQueue(frame.queue || []);
    canned = frame.canned || [];
    renderCanned();
  }

  function addChat(chat, messages, notify) {
    if (!chat || chat.id === undefined) return;
    const tab = el('button', { type: 'button', 'aria-pressed': 'false' }, visitorLabel(chat));
    tab.dataset.chatId = String(chat.id);
    tab.addEventListener('click', () => selectChat(chat.id));
    const previous = chats.get(chat.id);
    if (previous) previous.tab.parentElement.remove();
    const entry = { chat, messages: new Map(), pending: new Map(), tab, unread: false, preview: '' };
    for (const message of messages) entry.messages.set(message.id, message);
    chats.set(chat.id, entry);
    chatList.append(el('li', {}, tab));
    if (notify) chatAlert(t('new_chat'), `${chat.site || ''} — ${visitorLabel(chat)}`);
    if (selectedChat === null || !chats.has(selectedChat)) selectChat(chat.id);
    else if (notify) markUnread(entry, true);
    updateChatCount();
  }

  function removeChat(id, reason) {
    const entry = chats.get(id);
    if (!entry) return;
    chats.delete(id);
    entry.tab.parentElement.remove();
    if (reason === 'visitor' || reason === 'visitor_left') showAlert(t('alert_visitor_left', { visitor: visitorLabel(entry.chat) }));
    if (selectedChat === id) {
      selectedChat = null;
      const next = chats.keys().next();
      if (!next.done) selectChat(next.value);
      else renderChat();
    }
    updateChatCount();
  }

  function updateChatCount() {
    noChats.hidden = chats.size > 0;
    chatCount.textContent = chats.size ? `(${chats.size})` : '';
  }

  function markUnread(entry, on) {
    entry.unread = on;
    entry.tab.classList.toggle('unread', on);
  }

  function selectChat(id) {
    selectedChat = chats.has(id) ? id : null;
    for (const [chatId, entry] of chats) entry.tab.setAttribute('aria-pressed', String(chatId === selectedChat));
    renderChat();
    if (selectedChat && onSelect) onSelect(selectedChat); // outcome.js: the note and tags of this chat
  }

  function renderChat() {
    const entry = chats.get(selectedChat);
    chatPane.hidden = !entry;
    if (!entry) return;
    markUnread(entry, false);
    const chat = entry.chat;
    const bits = [String(chat.site || ''), visitorLabel(chat)];
    if (chat.fallback) {
      const why = fallbackTexts();
      bits.push(t('tried_to_call_because', { why: Object.hasOwn(why, chat.fallback) ? why[chat.fallback] : chat.fallback }));
    }
    chatHead.replaceChildren(bits.filter(Boolean).join(' · '));
    if (chat.page) chatHead.append(' · ', safeLink(chat.page));
    chatLog.replaceChildren();
    for (const message of entry.messages.values()) chatLog.append(messageItem(message));
    for (const item of entry.pending.values()) chatLog.append(item);
    chatLog.scrollTop = chatLog.scrollHeight;
    showPreview(chat.id, entry.preview);
    renderCannedPicker();
    markRead(entry);
  }

  function addMessage(chatId, message, fromOthers) {
    const entry = chats.get(chatId);
    if (!entry || !message || entry.messages.has(message.id)) return;
    entry.messages.set(message.id, message);
    if (message.sender === 'visitor') entry.preview = '';
    if (selectedChat === chatId) {
      renderChat();
    } else {
      markUnread(entry, true);
    }
    if (fromOthers && message.sender === 'visitor' && (selectedChat !== chatId || document.hidden)) {
      chatAlert(t('new_message'), `${visitorLabel(entry.chat)}: ${message.text}`);
    }
  }

  function markRead(entry) {
    if (document.hidden) return;
    const ids = Array.from(entry.messages.values()).filter((m) => m.sender === 'visitor' && m.status !== 'read').map((m) => m.id);
    if (!ids.length) return;
    for (const id of ids) entry.messages.get(id).status = 'read';
    send({ type: 'chat.read', chat_id: entry.chat.id, up_to: Math.max(...ids) });
  }
  document.addEventListener('visibilitychange', () => {
    const entry = chats.get(selectedChat);
    if (entry) markRead(entry);
  });

  // What the visitor is typing, before they send it: the operator can prepare the answer.
  function showPreview(chatId, text) {
    const entry = chats.get(chatId);
    if (!entry) return;
    entry.preview = text;
    if (selectedChat !== chatId) return;
    chatPreview.hidden = !text;
    chatPreview.textContent = text ? t('typing', { text }) : '';
  }

  chatForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const entry = chats.get(selectedChat);
    const text = chatInput.value.trim();
    if (!entry || !text) return;
    const clientId = String(++clientIds);
    if (!send({ type: 'chat.send', chat_id: entry.chat.id, text, client_id: clientId })) {
      showAlert(t('alert_offline_message'));
      return;
    }
    const pending = el('li', { class: 'operator pending' }, text);
    entry.pending.set(clientId, pending);
    chatLog.append(pending);
    chatLog.scrollTop = chatLog.scrollHeight;
    chatInput.value = '';
    lastTypingSent = 0;
  });

  chatInput.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey) {
      event.preventDefault();
      chatForm.requestSubmit();
    }
  });

  chatInput.addEventListener('input', () => {
    if (selectedChat === null || Date.now() - lastTypingSent < TYPING_EVERY_MS) return;
    lastTypingSent = Date.now();
    send({ type: 'chat.typing', chat_id: selectedChat, active: true });
  });

  offerCallButton.addEventListener('click', () => {
    if (selectedChat !== null) send({ type: 'chat.offer_call', chat_id: selectedChat });
  });

  chatTransferButton.addEventListener('click', () => {
    if (selectedChat === null || !chatTransferTo.value) return;
    send({ type: 'chat.transfer', chat_id: selectedChat, operator_id: Number(chatTransferTo.value) });
  });

  chatCloseButton.addEventListener('click', () => {
    if (selectedChat !== null) send({ type: 'chat.close', chat_id: selectedChat });
  });

  // ---- the queue -----------------------------------------------------------------------------

  function renderQueue(waiting) {
    queueList.replaceChildren();
    queueBox.hidden = waiting.length === 0;
    for (const chat of waiting) {
      const pick = el('button', { type: 'button', 'data-testid': 'op-pick' }, t('take'));
      pick.addEventListener('click', () => send({ type: 'chat.pick', chat_id: chat.id }));
      const item = el('li', {}, `${chat.site || ''} — ${visitorLabel(chat)}`, pick);
      item.dataset.chatId = String(chat.id);
      queueList.append(item);
    }
  }

  // ---- canned replies ------------------------------------------------------------------------

  function renderCanned() {
    cannedList.replaceChildren();
    for (const reply of canned) {
      const remove = el('button', { type: 'button' }, t('remove'));
      remove.addEventListener('click', () => send({ type: 'canned.remove', id: reply.id }));
      cannedList.append(el('li', {}, el('span', {}, `${reply.title}: ${reply.text}`), remove));
    }
    renderCannedPicker();
  }

  function renderCannedPicker() {
    const entry = chats.get(selectedChat);
    const siteId = entry && entry.chat.site_id;
    cannedSelect.replaceChildren(el('option', { value: '' }, t('canned_reply')));
    for (const reply of canned) {
      if (reply.site_id === null || reply.site_id === siteId) {
        cannedSelect.append(el('option', { value: String(reply.id) }, String(reply.title)));
      }
    }
  }

  cannedSelect.addEventListener('change', () => {
    const reply = canned.find((r) => String(r.id) === cannedSelect.value);
    if (reply) {
      chatInput.value = chatInput.value ? `${chatInput.value} ${reply.text}` : String(reply.text);
      chatInput.focus();
    }
    cannedSelect.value = '';
  });

  cannedForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const form = cannedForm.elements;
    if (send({ type: 'canned.add', title: form.title.value, text: form.text.value })) cannedForm.reset();
  });

  // ---- what the server says about chats --------------------------------------------------------

  socket.on('hello', replaceChats);
  socket.on('chat.assigned', (frame) => {
    addChat(frame.chat, frame.messages || [], true);
    if (frame.preview) showPreview(frame.chat.id, frame.preview);
  });
  socket.on('chat.message', (frame) => addMessage(frame.chat_id, frame.message, true));
  socket.on('chat.ack', (frame) => {
    const entry = chats.get(frame.chat_id);
    if (entry && entry.pending.has(frame.client_id)) entry.pending.get(frame.client_id).remove();
    if (entry) entry.pending.delete(frame.client_id);
    addMessage(frame.chat_id, frame.message, false);
  });
  socket.on('chat.status', (frame) => {
    // "delivered" and "read" come from the operator's and the visitor's sockets, which the
    // server serves concurrently: a late "delivered" must not take back a "read".
    const entry = chats.get(frame.chat_id);
    let changed = false;
    for (const id of frame.ids || []) {
      const message = entry && entry.messages.get(id);
      if (message && rank(frame.status) > rank(message.status)) { message.status = frame.status; changed = true; }
    }
    if (changed && selectedChat === frame.chat_id) renderChat();
  });
  socket.on('chat.typing', (frame) => showPreview(frame.chat_id, String(frame.text || '')));
  socket.on('chat.queue', (frame) => renderQueue(Array.isArray(frame.chats) ? frame.chats : []));
  socket.on('chat.closed', (frame) => removeChat(frame.chat_id, frame.reason));
  socket.on('canned', (frame) => {
    canned = Array.isArray(frame.replies) ? frame.replies : [];
    renderCanned();
  });
}
