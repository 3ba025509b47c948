/* What came of a call or chat (op-note, op-tags, op-order, op-outcome-save): shown from the moment a
 * call connects or a chat is taken, and after it ends until the next one. The tags are suggested from
 * those used on the site (the `outcome` and `outcome.saved` frames carry them); the order number is
 * the one the shopper gave, which attributes their order when it is posted (callserver/outcomes.py).
 */
import { $, el } from './dom.js';
import { t } from './i18n.js';

/** The outcome card, below the active call, on `socket`; `alerts` says what could not be saved. */
export function createOutcome({ socket, alerts }) {
  const { send } = socket;
  let card = null; // built on first use, when the language pack is here
  let conversationId = null;
  let fields = null;
  let touched = false; // the operator typed or saved since this conversation was shown

  function build() {
    const note = el('textarea', { id: 'outcome-note', 'data-testid': 'op-note', rows: '3', maxlength: '4000' });
    const tags = el('input', { id: 'outcome-tags', 'data-testid': 'op-tags', type: 'text', list: 'outcome-tag-list',
      autocomplete: 'off', maxlength: '500' });
    const suggestions = el('datalist', { id: 'outcome-tag-list' });
    const order = el('input', { id: 'outcome-order', 'data-testid': 'op-order', type: 'text', maxlength: '100',
      autocomplete: 'off' });
    const status = el('p', { class: 'meta', 'data-testid': 'op-outcome-status', 'aria-live': 'polite' });
    const form = el('form', { class: 'outcome-form' },
      el('label', { for: 'outcome-note' }, t('outcome_note')), note,
      el('label', { for: 'outcome-tags' }, t('outcome_tags')), tags, suggestions,
      el('label', { for: 'outcome-order' }, t('outcome_order')), order,
      el('div', { class: 'actions' }, el('button', { type: 'submit', 'data-testid': 'op-outcome-save' },
        t('outcome_save'))), status);
    // What the operator typed wins over a stored outcome that arrives later (the `outcome` reply to
    // `outcome.get` may come after they started, or after their save under load).
    form.addEventListener('input', () => { touched = true; });
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      if (!conversationId) return;
      touched = true;
      const frame = {
        type: 'outcome.save', conversation_id: conversationId, note: note.value,
        tags: tags.value.split(',').map((tag) => tag.trim()).filter(Boolean), order: order.value.trim(),
      };
      if (send(frame)) status.textContent = '';
      else alerts.showAlert(t('alert_offline_outcome'));
    });
    card = el('section', { id: 'outcome', class: 'card outcome', 'data-testid': 'op-outcome',
      'aria-labelledby': 'outcome-title' }, el('h2', { id: 'outcome-title' }, t('outcome_title')),
    el('p', { class: 'meta', id: 'outcome-of' }), form);
    fields = { note, tags, suggestions, order, status };
    const after = $('active');
    if (after) after.after(card);
    else document.body.append(card);
  }

  /** Shows the card for this conversation (a new one empties it) and asks what is stored for it. */
  function show(id, channel) {
    if (!card) build();
    if (id !== conversationId) {
      conversationId = id;
      touched = false;
      fields.note.value = fields.tags.value = fields.order.value = fields.status.textContent = '';
      card.dataset.conversationId = id;
      $('outcome-of').textContent = channel === 'chat' ? t('outcome_of_chat') : t('outcome_of_call');
    }
    card.hidden = false;
    send({ type: 'outcome.get', conversation_id: id });
  }

  function fill(outcome, saved) {
    if (!outcome || String(outcome.conversation_id) !== conversationId) return;
    if (saved || !touched) {
      fields.note.value = String(outcome.note || '');
      fields.tags.value = (outcome.tags || []).join(', ');
      fields.order.value = String(outcome.order || '');
    }
    fields.suggestions.replaceChildren(...(outcome.suggested_tags || []).map((tag) => el('option', { value: String(tag) })));
    if (saved) fields.status.textContent = t('outcome_saved');
  }

  socket.on('call.connected', (frame) => { if (frame.call_id) show(String(frame.call_id), 'call'); });
  socket.on('outcome', (frame) => fill(frame.outcome, false));
  socket.on('outcome.saved', (frame) => fill(frame.outcome, true));
  return { show };
}
