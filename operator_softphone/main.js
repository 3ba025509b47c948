/* callserver operator softphone: the page's start and wiring.
 *
 * Speaks the operator side of docs/signaling.md over /ws/operator, answers calls with the operator's
 * microphone and handles several text chats at once. Each part of the page is a module that owns its
 * state and registers for the socket frames it needs: call.js, chats.js, left-messages.js, callbacks.js, board.js,
 * outcome.js (note, tags, order of a conversation), visitor.js (the visitor panel and their history),
 * colleagues.js; alerts.js gets the operator's attention; dom.js and i18n.js hold the one el and the
 * one t that all of them use. Served as they are, no build step.
 */
import { $ } from './dom.js';
import { t, usePack } from './i18n.js';
import { operatorSocket, retryDelay } from './socket.js';
import { createAlerts } from './alerts.js';
import { createCalls } from './call.js';
import { createChats } from './chats.js';
import { createLeftMessages } from './left-messages.js';
import { createColleagues } from './colleagues.js';
import { createBoard } from './board.js';
import { createCallbacks } from './callbacks.js';
import { createOutcome } from './outcome.js';
import { createVisitorHistory } from './visitor.js';

const presenceSelect = $('presence');
const banner = $('banner');

function showOperator(operator) {
  $('operator-name').textContent = String(operator.name || operator.email || '');
}

// ---- settings from /operator/config ----------------------------------------------------------

let configRequest = null;

/** Resolves to the RTCConfiguration (ICE servers and policy); asked once, asked again after a failure. */
function loadConfig() {
  if (!configRequest) {
    configRequest = fetch(`/operator/config?lang=${encodeURIComponent(navigator.language || '')}`,
      { credentials: 'same-origin' })
      .then(async (res) => {
        if (res.status === 401) location.href = '/operator/login';
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        const body = await res.json();
        if (body.operator) showOperator(body.operator);
        if (body.csrf) $('logout-csrf').value = body.csrf;
        if (body.texts) usePack(body.texts, body.lang);
        return { iceServers: Array.isArray(body.ice_servers) ? body.ice_servers : [],
          iceTransportPolicy: body.ice_transport_policy === 'relay' ? 'relay' : 'all' };
      })
      .catch((error) => {
        configRequest = null;
        throw error;
      });
  }
  return configRequest;
}

// ---- the socket and the page's parts ---------------------------------------------------------

const socket = operatorSocket({
  onOpen: () => { banner.hidden = true; },
  onClose: ({ retrying }) => {
    presenceSelect.disabled = true;
    if (retrying) banner.hidden = false;
  },
});
const alerts = createAlerts({ inCall: () => calls.inCall() });
const history = createVisitorHistory({ socket });
const calls = createCalls({ socket, alerts, rtcConfiguration: loadConfig, history });
const outcome = createOutcome({ socket, alerts });
createChats({ socket, alerts, onSelect: (id) => { outcome.show(id, 'chat'); history.show(id, 'chat'); } });
createLeftMessages({ socket, alerts });
createCallbacks({ socket, alerts });
createColleagues({ socket, pickers: [$('chat-transfer-to'), $('call-transfer-to')] });
const board = createBoard({ socket, alerts });

socket.on('hello', (frame) => {
  if (frame.operator) showOperator(frame.operator);
  setPresence(frame.presence);
});
socket.on('presence', (frame) => setPresence(frame.status));
socket.on('error', (frame) => alerts.showAlert(String(frame.message || frame.code || t('something_wrong'))));

// ---- presence ----------------------------------------------------------------------------------

let confirmedPresence = 'offline';

function setPresence(status) {
  if (!['online', 'away', 'offline'].includes(status)) return;
  confirmedPresence = status;
  presenceSelect.value = status;
  presenceSelect.disabled = false;
}

presenceSelect.addEventListener('change', () => {
  if (!socket.send({ type: 'presence.set', status: presenceSelect.value })) {
    presenceSelect.value = confirmedPresence;
    alerts.showAlert(t('alert_offline_status'));
  }
});

// ---- clocks and start --------------------------------------------------------------------------

setInterval(() => {
  calls.tick();
  board.tick();
}, 1000);

// The socket opens once the language pack is here, so whatever it brings is shown in the operator's
// language; until then (and while the settings cannot be loaded) the page says it is reconnecting.
let configAttempt = 0;
function start() {
  loadConfig().then(socket.connect, () => {
    banner.hidden = false;
    const delay = retryDelay(configAttempt);
    configAttempt += 1;
    setTimeout(start, delay);
  });
}
start();
