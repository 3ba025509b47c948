/* The live visitors board (op-visitors): who is on the shop's site now, the best prospects first,
 * and inviting one of them to a call or chat.
 */
import { $, el, safeLink, clock } from './dom.js';
import { t } from './i18n.js';

function money(value, currency) {
  if (!value) return '—';
  try {
    return new Intl.NumberFormat(document.documentElement.lang || undefined,
      { style: 'currency', currency: currency || 'EUR', maximumFractionDigits: 0 }).format(value);
  } catch (e) {
    return `${Math.round(value)} ${currency || ''}`.trim();
  }
}

function timeOnSite(row) {
  const since = Date.parse(row.since);
  return clock(Number.isNaN(since) ? row.seconds_on_site * 1000 : Date.now() - since);
}

/** The board, on `socket`; `alerts` says when an invitation could not go out. Returns `tick()`. */
export function createBoard({ socket, alerts }) {
  const boardBody = $('visitors');
  const boardTable = boardBody.closest('table');
  const noVisitors = $('no-visitors');
  const visitorCount = $('visitor-count');
  const boardRows = new Map(); // visitor id → <tr>
  const invitedHere = new Set(); // visitors this softphone invited (until the server's board says so)
  let board = [];

  /** One row per visitor, the best score first; rows are reused so keyboard focus survives updates. */
  function renderBoard() {
    const seen = new Set();
    let previous = null;
    for (const row of board) {
      const id = String(row.id);
      seen.add(id);
      let tr = boardRows.get(id);
      if (!tr) {
        tr = el('tr', { 'data-visitor-id': id });
        boardRows.set(id, tr);
      }
      fillRow(tr, row);
      // Move a row only when the order changed: moving the focused row would drop the focus.
      const wanted = previous ? previous.nextSibling : boardBody.firstChild;
      if (wanted !== tr) boardBody.insertBefore(tr, wanted);
      previous = tr;
    }
    for (const [id, tr] of boardRows) {
      if (!seen.has(id)) { tr.remove(); boardRows.delete(id); }
    }
    boardTable.hidden = board.length === 0;
    noVisitors.hidden = board.length > 0;
    visitorCount.textContent = board.length ? `(${board.length})` : '';
  }

  function fillRow(tr, row) {
    const id = String(row.id);
    tr.dataset.score = String(row.score);
    tr.dataset.pages = String(row.pages);
    tr.dataset.value = String(row.value || 0);
    tr.dataset.siteId = String(row.site_id);
    tr.dataset.reachable = String(Boolean(row.reachable));
    tr.row = row;
    const level = row.score >= 50 ? 'hot' : row.score >= 25 ? 'warm' : '';
    const journey = (row.journey || []).slice(0, -1).map((step) => String(step.title || step.page)).join(' → ');
    const kind = row.returning ? t('v_returning') : t('v_new');
    const source = [String(row.source || t('direct')), row.search ? `“${row.search}”` : '']
      .filter(Boolean).join(' ');
    const invited = invitedHere.has(id) || row.invited;
    let action;
    if (row.dismissed) {
      action = el('span', { class: 'invited' }, t('dismissed'));
    } else if (invited) {
      action = el('span', { class: 'invited' }, t('invited'));
    } else {
      action = el('button', { type: 'button', 'data-testid': 'op-invite',
        'aria-label': t('invite_aria', { who: row.title || row.page || id }) },
      t('invite'));
      action.disabled = !row.reachable;
      action.addEventListener('click', () => invite(tr.row, action));
    }
    // Ring the visitor's page now (callbacks.js shows how the ring goes).
    const call = el('button', { type: 'button', 'data-testid': 'op-call-visitor',
      'aria-label': t('call_visitor_aria') }, t('call_visitor'));
    call.disabled = !row.reachable;
    call.addEventListener('click', () => {
      if (!socket.send({ type: 'visitor.call', visitor_id: id, site_id: row.site_id })) alerts.showAlert(t('alert_offline_invite'));
    });
    const focused = tr.contains(document.activeElement) && document.activeElement.dataset.testid === 'op-invite';
    tr.replaceChildren(
      el('td', { class: 'num' }, el('span', { class: `score ${level}` }, String(row.score))),
      el('td', {},
        el('div', { class: 'page-title' }, row.title ? el('strong', {}, String(row.title)) : null,
          row.title && row.page ? ' ' : null, row.page ? safeLink(row.page) : null),
        journey ? el('p', { class: 'journey' }, journey) : null),
      el('td', { class: 'num' }, String(row.pages)),
      el('td', { class: 'num time' }, timeOnSite(row)),
      el('td', {}, source),
      el('td', { class: 'num' }, money(row.value, row.currency)),
      el('td', {}, `${kind} · ${String(row.site || '')}`),
      el('td', {}, action, ' ', call));
    if (focused && action.tagName === 'BUTTON') action.focus();
  }

  function invite(row, button) {
    if (!socket.send({ type: 'visitor.invite', visitor_id: String(row.id), site_id: row.site_id })) {
      alerts.showAlert(t('alert_offline_invite'));
      return;
    }
    button.disabled = true;
  }

  socket.on('visitors', (frame) => {
    board = Array.isArray(frame.visitors) ? frame.visitors : [];
    renderBoard();
  });
  socket.on('visitor.invited', (frame) => {
    invitedHere.add(String(frame.visitor_id));
    renderBoard();
  });

  return {
    tick() {
      for (const tr of boardRows.values()) {
        const cell = tr.querySelector('.time');
        if (cell && tr.row) cell.textContent = timeOnSite(tr.row);
      }
    },
  };
}
