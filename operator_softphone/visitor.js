/* The visitor panel (op-visitor): what the server tells about the caller, whatever fields it sends,
 * and a returning visitor's history — their earlier calls, chats, left messages and orders, each
 * linked to its dashboard page (`visitor.history`, callserver/visitors/history.py) — shown there and
 * on a ringing call's card.
 */
import { $, el, safeLink, clock } from './dom.js';
import { t, reasonText } from './i18n.js';

/** Labels of the fields the server sends; a field a newer server adds is labelled by its name. */
const labels = () => ({
  site: t('f_site'), title: t('f_title'), page: t('f_page'), referrer: t('f_referrer'), search: t('f_search'),
  cart_value: t('f_cart_value'), currency: t('f_currency'), product_price: t('f_product_price'), sku: t('f_sku'),
  country: t('f_country'), device: t('f_device'), name: t('f_name'), email: t('f_email'), phone: t('f_phone'),
  utm_source: t('f_utm_source'), utm_medium: t('f_utm_medium'), utm_campaign: t('f_utm_campaign'),
  utm_term: t('f_utm_term'), utm_content: t('f_utm_content'), transfer_from_name: t('f_transfer_from'),
});
const HIDDEN_KEYS = new Set(['id', 'token', 'sdp', 'ringing_since']);

/** The call's fields as [label, text] rows, for whatever fields the server sends. */
function visitorRows(call) {
  const rows = [];
  const known = labels();
  const seen = new Set();
  (function walk(value, path) {
    const key = path[path.length - 1];
    if (value === null || value === undefined || value === '' || HIDDEN_KEYS.has(key) || rows.length >= 50) return;
    if (Array.isArray(value)) value = value.filter((item) => typeof item !== 'object').join(', ');
    if (typeof value === 'object') {
      if (path.length < 4) for (const [name, inner] of Object.entries(value)) walk(inner, path.concat(name));
      return;
    }
    const label = labelFor(path, known);
    const text = String(value);
    if (seen.has(`${label}\n${text}`)) return; // e.g. page both on the call and in its context
    seen.add(`${label}\n${text}`);
    rows.push([label, text]);
  })(call, []);
  return rows;
}

function labelFor(path, known) {
  const parts = path.filter((part) => part !== 'context' && part !== 'visitor');
  const name = parts.join('_');
  if (Object.hasOwn(known, name)) return known[name];
  const words = parts.join(' ').replace(/[_.]+/g, ' ').trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** Shows this call's visitor in the panel, or that no call is selected (null). */
export function showVisitor(call) {
  const fields = $('visitor-fields');
  fields.replaceChildren();
  $('visitor-empty').hidden = Boolean(call);
  if (!call) return;
  for (const [label, text] of visitorRows(call)) {
    const isUrl = /^https?:\/\//i.test(text);
    fields.append(el('dt', {}, label), el('dd', {}, isUrl ? safeLink(text) : text));
  }
}

// ---- the visitor's history --------------------------------------------------------------------

const ON_CARD = 3; // entries on a ringing call's card; the panel shows them all (the server sends ≤ 10)
const KEPT = 50; // conversations whose history is kept, the oldest forgotten first

/** An entry's outcome in the operator's words: a call's end reason, a chat's, message's or order's state. */
function outcomeText(entry) {
  const outcome = String(entry.outcome || '');
  if (entry.channel === 'call') return reasonText(outcome);
  const texts = {
    chat_waiting: t('h_chat_waiting'), chat_open: t('h_chat_open'), chat_closed: t('h_chat_closed'),
    message_new: t('h_message_new'), message_handled: t('h_message_handled'),
    order_pending: t('h_order_pending'), order_paid: t('h_order_paid'),
    order_partially_refunded: t('h_order_partially_refunded'), order_refunded: t('h_order_refunded'),
    order_cancelled: t('h_order_cancelled'),
  };
  const key = `${entry.channel}_${outcome}`;
  return Object.hasOwn(texts, key) ? texts[key] : outcome;
}

function channelText(channel) {
  const texts = { call: t('h_call'), chat: t('h_chat'), message: t('h_message'), order: t('h_order') };
  return Object.hasOwn(texts, channel) ? texts[channel] : String(channel);
}

function when(at) {
  const date = new Date(String(at));
  if (Number.isNaN(date.getTime())) return '';
  try {
    return date.toLocaleString(document.documentElement.lang || undefined, { dateStyle: 'medium', timeStyle: 'short' });
  } catch (e) {
    return date.toLocaleString();
  }
}

/** One entry as a list item: date, channel, operator, outcome and length or total; note, tags, rating. */
function historyItem(entry) {
  const facts = [channelText(entry.channel)];
  if (entry.operator) facts.push(String(entry.operator));
  if (entry.outcome) facts.push(outcomeText(entry));
  if (typeof entry.duration_s === 'number' && entry.duration_s > 0) facts.push(clock(entry.duration_s * 1000));
  if (entry.total) facts.push(`${entry.total} ${entry.currency || ''}`.trim());
  const date = when(entry.at);
  // Pages of this server only (a path): never a link the network could make point elsewhere.
  const page = typeof entry.page === 'string' && entry.page.startsWith('/dashboard/') ? entry.page : null;
  const head = page
    ? el('a', { href: page, target: '_blank', rel: 'noopener' }, date || channelText(entry.channel))
    : el('span', {}, date);
  const extra = [];
  if (typeof entry.csat === 'number') extra.push(t('h_rated', { score: entry.csat }));
  if (Array.isArray(entry.tags) && entry.tags.length) extra.push(entry.tags.map(String).join(', '));
  const item = el('li', { class: 'history-entry', 'data-channel': String(entry.channel), 'data-id': String(entry.id) },
    head, ' ', el('span', { class: 'history-facts' }, facts.join(' · ')),
    entry.note ? el('p', { class: 'history-note' }, String(entry.note)) : null,
    extra.length ? el('p', { class: 'meta' }, extra.join(' · ')) : null);
  return item;
}

/**
 * Histories of the visitors of calls and chats, asked once per conversation on `socket`; `show(id,
 * kind)` puts one in the visitor panel (a call's or a chat's), `clear(kind)` empties it when it shows
 * one of that kind, `card(id)` is an element for a ringing call's card that fills when it arrives.
 */
export function createVisitorHistory({ socket }) {
  const known = new Map(); // conversation id → entries
  const asked = new Set();
  const cards = new Map(); // conversation id → the card's element, until filled
  const panel = $('visitor-history');
  const list = $('visitor-history-list');
  const none = $('visitor-history-none');
  let shown = null; // { id, kind } in the panel

  function ask(id) {
    if (known.has(id) || asked.has(id)) return;
    if (socket.send({ type: 'visitor.history', conversation_id: id })) asked.add(id);
  }

  function renderPanel() {
    const entries = shown && known.get(shown.id);
    panel.hidden = !entries;
    if (!entries) return;
    panel.dataset.conversationId = shown.id;
    list.replaceChildren(...entries.map(historyItem));
    none.hidden = entries.length > 0;
  }

  function renderCard(element, entries) {
    if (!entries.length) return;
    const items = entries.slice(0, ON_CARD).map(historyItem);
    element.replaceChildren(el('p', { class: 'meta' }, t('h_returning', { count: entries.length })),
      el('ul', { class: 'history' }, ...items),
      entries.length > ON_CARD ? el('p', { class: 'meta' }, t('h_more', { count: entries.length - ON_CARD })) : null);
    element.hidden = false;
  }

  function show(id, kind) {
    shown = id ? { id: String(id), kind } : null;
    if (shown) ask(shown.id);
    renderPanel();
  }

  function clear(kind) {
    if (shown && shown.kind === kind) show(null);
  }

  function card(id) {
    const element = el('div', { class: 'incoming-history', 'data-testid': 'op-incoming-history', hidden: '' });
    const key = String(id);
    if (known.has(key)) renderCard(element, known.get(key));
    else {
      cards.set(key, element);
      if (cards.size > KEPT) cards.delete(cards.keys().next().value);
      ask(key);
    }
    return element;
  }

  socket.on('visitor.history', (frame) => {
    if (frame.conversation_id === null || frame.conversation_id === undefined) return;
    const id = String(frame.conversation_id);
    const entries = Array.isArray(frame.entries) ? frame.entries.filter((e) => e && typeof e === 'object') : [];
    known.delete(id);
    known.set(id, entries);
    if (known.size > KEPT) known.delete(known.keys().next().value);
    const element = cards.get(id);
    cards.delete(id);
    if (element && element.isConnected) renderCard(element, entries);
    if (shown && shown.id === id) renderPanel();
  });
  // A new socket: what was asked on the old one may never have been answered.
  socket.on('hello', () => {
    asked.clear();
    for (const id of cards.keys()) ask(id);
    if (shown) ask(shown.id);
  });

  return { show, clear, card };
}
