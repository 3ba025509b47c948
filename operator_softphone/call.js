/* Calls: the ringing list, answering on a peer connection of our own, and the call in progress
 * (mute, hold, transfer, hang up). One call at a time; the others keep ringing.
 */
import { $, el, safeLink, clock } from './dom.js';
import { t, reasonText } from './i18n.js';
import { showVisitor } from './visitor.js';
import { watchMicrophone, watchQuality } from './quality.js';

const ICE_GATHERING_WAIT_MS = 2000;
const ENDED_NOTICE_MS = 4000;
const ICE_DISCONNECTED_MS = 2000; // ICE disconnected this long: a new peer connection
const REANSWER_WAIT_MS = 3000; // a re-offer not answered this long: our socket went with the old network

/** Resolves once the peer connection has gathered its candidates, or after `timeoutMs`. */
function iceGathered(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    const timer = setTimeout(done, timeoutMs);
    function done() {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    }
    pc.addEventListener('icegatheringstatechange', check);
  });
}

function setPressed(button, pressed, label) {
  button.setAttribute('aria-pressed', String(pressed));
  button.textContent = label;
}

/**
 * The softphone's calls, on `socket`; `alerts` rings and notifies, `rtcConfiguration()` resolves to
 * the RTCConfiguration (ICE servers and transport policy) for a new peer connection. Returns
 * `inCall()` and `tick()` (the clocks, every second).
 */
export function createCalls({ socket, alerts, rtcConfiguration, history }) {
  const { send } = socket;
  const { showAlert } = alerts;
  const incomingList = $('incoming');
  const noCalls = $('no-calls');
  const activeSection = $('active');
  const activeStatus = $('active-status');
  const activeState = $('active-state'); // op-call-state: connected, reconnecting, held
  const activeTimer = $('active-timer');
  const muteButton = $('mute');
  const holdButton = $('hold');
  const hangupButton = $('hangup');
  const remoteAudio = $('remote-audio');
  // iOS Safari plays a remote stream only with play() on its track and again once it can play.
  const play = () => remoteAudio.play().catch(() => { /* autoplay: the operator's click counted */ });
  remoteAudio.addEventListener('canplay', play);
  const callTransferTo = $('call-transfer-to');
  const callTransferButton = $('call-transfer');

  const ringing = new Map(); // call id → { call, element, waiting, since, notification }
  let selectedId = null; // the ringing call whose visitor is shown
  let active = null; // the call being answered or held: { id, call, pc, stream, accepted, connected, held, ... }
  let activeNoticeTimer = null;

  // ---- incoming calls ------------------------------------------------------------------------

  function replaceIncoming(calls) {
    const ids = new Set(calls.map((call) => call.id));
    for (const id of Array.from(ringing.keys())) if (!ids.has(id)) removeIncoming(id);
    for (const call of calls) if (!ringing.has(call.id)) addIncoming(call, false);
  }

  function addIncoming(call, notify) {
    if (ringing.has(call.id) || (active && active.id === call.id)) return;
    const parsed = Date.parse(call.ringing_since);
    const since = Number.isNaN(parsed) ? Date.now() : Math.min(parsed, Date.now());
    const entry = { call, element: null, waiting: null, since, notification: null };
    entry.element = incomingItem(entry);
    ringing.set(call.id, entry);
    incomingList.append(entry.element);
    if (notify) entry.notification = alerts.callNotification(call);
    if (selectedId === null && !active) select(call.id);
    updateRinging();
  }

  /** The list item of a ringing call. */
  function incomingItem(entry) {
    const call = entry.call;
    const visitor = call.visitor || {};
    const who = String(call.site || t('a_visitor'));
    entry.waiting = el('span', { class: 'waiting' }, waitingText(entry));
    const answerButton = el('button', { type: 'button', class: 'answer', 'data-testid': 'op-answer',
      'aria-label': t('answer_aria', { who }) }, t('answer'));
    const declineButton = el('button', { type: 'button', class: 'decline', 'data-testid': 'op-decline',
      'aria-label': t('decline_aria', { who }) }, t('decline'));
    const where = [visitor.country, visitor.device].filter(Boolean).map(String).join(' · ');
    const element = el('li', { class: 'incoming', 'data-testid': 'op-incoming', tabindex: '0' },
      el('div', { class: 'incoming-head' },
        el('span', { class: 'incoming-site' }, String(call.site || t('unknown_site'))), entry.waiting),
      call.transfer_from ? el('p', { class: 'meta' }, t('transfer_from', { name: call.transfer_from.name })) : null,
      el('p', { class: 'incoming-page' },
        call.title ? el('strong', {}, String(call.title)) : null,
        call.title && call.page ? ' — ' : null,
        call.page ? safeLink(call.page) : null),
      call.referrer ? el('p', { class: 'meta' }, `${t('came_from')} `, safeLink(call.referrer)) : null,
      where ? el('p', { class: 'meta' }, where) : null,
      history ? history.card(call.id) : null, // a returning visitor's earlier calls, chats, orders
      el('div', { class: 'incoming-actions' }, answerButton, declineButton));
    element.dataset.callId = String(call.id);
    answerButton.disabled = Boolean(active);

    answerButton.addEventListener('click', (event) => { event.stopPropagation(); answer(call.id); });
    declineButton.addEventListener('click', (event) => { event.stopPropagation(); decline(call.id); });
    element.addEventListener('click', () => select(call.id));
    element.addEventListener('keydown', (event) => {
      if (event.target === element && (event.key === 'Enter' || event.key === ' ')) {
        event.preventDefault();
        select(call.id);
      }
    });
    return element;
  }

  function waitingText(entry) {
    return t('waiting_for', { time: clock(Date.now() - entry.since) });
  }

  function removeIncoming(id) {
    const entry = ringing.get(id);
    if (!entry) return;
    ringing.delete(id);
    entry.element.remove();
    if (entry.notification) entry.notification.close();
    if (selectedId === id) {
      selectedId = null;
      const next = ringing.keys().next();
      if (!next.done && !active) select(next.value);
      else renderVisitor();
    }
    updateRinging();
  }

  function select(id) {
    selectedId = ringing.has(id) ? id : null;
    for (const [callId, entry] of ringing) entry.element.classList.toggle('selected', callId === selectedId);
    renderVisitor();
  }

  function decline(id) {
    if (!send({ type: 'call.decline', call_id: id })) {
      showAlert(t('alert_offline_decline'));
      return;
    }
    removeIncoming(id);
  }

  function updateRinging() {
    noCalls.hidden = ringing.size > 0;
    for (const entry of ringing.values()) {
      entry.element.querySelector('.answer').disabled = Boolean(active);
    }
    if (ringing.size > 0) alerts.startRinging();
    else alerts.stopRinging();
  }

  function renderVisitor() {
    const entry = active || ringing.get(selectedId);
    showVisitor(entry ? entry.call : null);
    if (history && entry) history.show(entry.call.id, 'call');
    else if (history) history.clear('call');
  }

  // ---- answering and the active call ---------------------------------------------------------

  async function answer(id) {
    const entry = ringing.get(id);
    if (!entry || active) return;
    clearTimeout(activeNoticeTimer);
    const current = active = { id, call: entry.call, accepted: false, answered: false, connected: false, held: false,
      rtc: { iceServers: [] }, trouble: new Set() };
    removeIncoming(id);
    showActive(t('answering'));
    renderVisitor();

    try {
      current.rtc = await rtcConfiguration();
    } catch (error) {
      showAlert(t('alert_config_no_turn', { error: error.message }));
    }
    try {
      current.stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      if (active !== current) return;
      const blocked = error && (error.name === 'NotAllowedError' || error.name === 'NotFoundError');
      showAlert(blocked ? t('alert_mic_blocked') : t('alert_mic_failed', { error: error && error.message }));
      finishActive(t('could_not_take'));
      addIncoming(current.call, false); // still ringing for us unless withdrawn meanwhile
      return;
    }
    if (active !== current) {
      current.stream.getTracks().forEach((track) => track.stop());
      return;
    }
    current.stopMic = watchMicrophone(current); // level meter, silent warning, device picker

    try {
      await offer(current.pc = peer(current));
    } catch (error) {
      if (active !== current) return;
      showAlert(t('alert_call_failed', { error: error.message }));
      send({ type: 'call.decline', call_id: id });
      finishActive(t('could_not_take'));
      return;
    }
    if (active !== current) return;
    if (!send({ type: 'call.accept', call_id: id, sdp: current.pc.localDescription.sdp })) {
      showAlert(t('alert_offline_answer'));
      finishActive(t('could_not_take'));
      return;
    }
    current.accepted = true;
    activeStatus.textContent = t('connecting');
  }

  /**
   * A peer connection for the call with our microphone. Media lost once it had flowed (ICE
   * disconnected for 2 s, failed) is offered again on a new one (reoffer); before that it hangs up.
   */
  function peer(current) {
    const pc = new RTCPeerConnection(current.rtc);
    pc.addEventListener('track', (event) => {
      remoteAudio.srcObject = event.streams[0] || new MediaStream([event.track]);
      play();
    });
    const watch = () => {
      if (pc !== current.pc || active !== current) return;
      const state = pc.iceConnectionState;
      clearTimeout(current.iceTimer);
      if (state === 'connected' || state === 'completed') {
        current.flowed = true;
        current.trouble.delete('media');
        showState();
      } else if (state === 'disconnected') {
        current.iceTimer = setTimeout(() => reoffer(current), ICE_DISCONNECTED_MS);
      } else if (state === 'failed' || pc.connectionState === 'failed') {
        if (current.flowed) reoffer(current);
        else {
          showAlert(t('alert_audio_lost'));
          hangup();
        }
      }
    };
    pc.addEventListener('connectionstatechange', watch);
    pc.addEventListener('iceconnectionstatechange', watch);
    for (const track of current.stream.getAudioTracks()) pc.addTrack(track, current.stream);
    return pc;
  }

  // The server takes no trickled candidates, so the offer carries them all.
  async function offer(pc) {
    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(pc, ICE_GATHERING_WAIT_MS);
  }

  /**
   * Our media went (or the network changed): the server cannot restart ICE (aiortc has none), so a
   * new peer connection offers our leg again (call.reoffer); call.reanswer swaps it in.
   */
  async function reoffer(current) {
    if (active !== current || current.next || !current.token) return;
    current.trouble.add('media');
    showState();
    const pc = current.next = peer(current);
    try {
      await offer(pc);
      if (active === current && send({ type: 'call.reoffer', call_id: current.id, sdp: pc.localDescription.sdp })) {
        // No answer: the socket is left on an address we no longer have. A new one resumes the call
        // and offers again (as the widget does).
        setTimeout(() => { if (current.next === pc) socket.drop(); }, REANSWER_WAIT_MS);
        return;
      }
    } catch (error) { /* the next trouble, or the resume, tries again */ }
    pc.close();
    current.next = null;
  }

  // A new network (Wi-Fi to another, a cable): our media path is gone.
  const moved = () => { if (active && active.flowed) reoffer(active); };
  window.addEventListener('online', moved);
  if (navigator.connection) navigator.connection.addEventListener('change', moved);

  /** op-call-state: reconnecting while either side is recovering, else held or connected. */
  function showState() {
    if (!active || !active.connected) return;
    activeState.hidden = false;
    activeState.textContent = active.trouble.size ? 'reconnecting' : active.held ? 'held' : 'connected';
    activeStatus.textContent = active.trouble.size ? t('reconnecting') : active.held ? t('on_hold') : inCallText();
  }

  function showActive(status) {
    activeSection.hidden = false;
    activeStatus.textContent = status;
    activeTimer.hidden = true;
    activeTimer.textContent = clock(0);
    setPressed(muteButton, false, t('mute'));
    setPressed(holdButton, false, t('hold'));
    muteButton.disabled = holdButton.disabled = callTransferButton.disabled = true;
    hangupButton.disabled = false;
  }

  function callConnected() {
    active.answered = true;
    active.connected = true;
    active.connectedAt = Date.now();
    activeStatus.textContent = inCallText();
    activeTimer.hidden = false;
    muteButton.disabled = holdButton.disabled = false;
    callTransferButton.disabled = false;
    if (!active.stopQuality) active.stopQuality = watchQuality(active); // the live quality badge
    showState();
  }

  function inCallText() {
    return t('in_call', { who: String(active.call.site || t('a_visitor')) });
  }

  muteButton.addEventListener('click', () => {
    if (!active || !active.stream) return;
    const muted = muteButton.getAttribute('aria-pressed') !== 'true';
    active.stream.getAudioTracks().forEach((track) => { track.enabled = !muted; });
    setPressed(muteButton, muted, muted ? t('unmute') : t('mute'));
  });

  holdButton.addEventListener('click', () => {
    if (!active || !active.connected) return;
    const on = !active.held;
    if (!send({ type: 'call.hold', call_id: active.id, on })) {
      showAlert(t('alert_offline_hold'));
      return;
    }
    active.held = on;
    setPressed(holdButton, on, on ? t('resume') : t('hold'));
    showState();
  });

  hangupButton.addEventListener('click', hangup);

  callTransferButton.addEventListener('click', () => {
    if (!active || !active.connected || !callTransferTo.value) return;
    if (send({ type: 'call.transfer', call_id: active.id, operator_id: Number(callTransferTo.value) })) {
      callTransferButton.disabled = true;
      activeStatus.textContent = t('transferring');
    }
  });

  function hangup() {
    if (!active) return;
    // Before call.accept went out, the server still thinks the call rings here: decline it.
    send(active.accepted ? { type: 'call.hangup', call_id: active.id } : { type: 'call.decline', call_id: active.id });
    finishActive(t('call_ended'));
  }

  /** Releases the active call's microphone and connection, once, and says how it ended. */
  function finishActive(message) {
    const current = active;
    if (!current) return;
    active = null;
    clearTimeout(current.iceTimer);
    activeState.hidden = true;
    if (current.stopMic) current.stopMic();
    if (current.stopQuality) current.stopQuality();
    if (current.next) current.next.close();
    if (current.pc) current.pc.close();
    if (current.stream) current.stream.getTracks().forEach((track) => track.stop());
    remoteAudio.srcObject = null;
    activeStatus.textContent = message;
    muteButton.disabled = holdButton.disabled = hangupButton.disabled = callTransferButton.disabled = true;
    clearTimeout(activeNoticeTimer);
    activeNoticeTimer = setTimeout(() => { if (!active) activeSection.hidden = true; }, ENDED_NOTICE_MS);
    updateRinging();
    if (selectedId === null && ringing.size > 0) select(ringing.keys().next().value);
    else renderVisitor();
  }

  // ---- what the server says about calls --------------------------------------------------------

  socket.on('hello', (frame) => replaceIncoming(Array.isArray(frame.incoming) ? frame.incoming : []));
  // Visitors this operator is ringing (callbacks.js, board.js): their call is taken as it comes.
  const ringingVisitors = new Set();
  socket.on('visitor_call.state', (frame) => {
    if (frame.state === 'ringing' || frame.state === 'answered') ringingVisitors.add(String(frame.id));
    else ringingVisitors.delete(String(frame.id));
  });
  socket.on('call.incoming', (frame) => {
    if (!frame.call || frame.call.id === undefined) return;
    const invitation = frame.call.invitation && String(frame.call.invitation);
    addIncoming(frame.call, !ringingVisitors.has(invitation));
    if (ringingVisitors.delete(invitation)) answer(frame.call.id);
  });
  socket.on('call.withdrawn', (frame) => {
    if (active && active.id === frame.call_id && !active.accepted) {
      finishActive(t('call_withdrawn', { reason: frame.reason ? reasonText(frame.reason) : t('r_no_longer_ringing') }));
    }
    removeIncoming(frame.call_id);
  });
  socket.on('call.answer', (frame) => {
    if (active && active.id === frame.call_id && active.pc) {
      active.answered = true;
      active.token = frame.resume_token;
      activeStatus.textContent = t('connecting_audio');
      active.pc.setRemoteDescription({ type: 'answer', sdp: frame.sdp }).catch((error) => {
        showAlert(t('alert_audio_failed', { error: error.message }));
        hangup();
      });
    }
  });
  socket.on('call.connected', (frame) => {
    if (active && active.id === frame.call_id) callConnected();
  });
  socket.on('call.ended', (frame) => {
    if (active && active.id === frame.call_id) finishActive(t('call_ended_reason', { reason: reasonText(frame.reason || 'unknown') }));
    removeIncoming(frame.call_id);
  });
  // ---- calls that survive the network (docs/signaling.md) --------------------------------------

  // Our socket went: the server holds the call for resume_window; the next hello resumes it.
  socket.on('socket.closed', () => {
    if (!active || !active.token) return;
    // A re-offer sent on it has no answer coming, and the server may have taken it in place of our
    // leg: both peer connections go, and the resumed call offers again.
    if (active.next) {
      active.next.close();
      active.pc.close();
      active.next = null;
    }
    active.trouble.add('socket');
    showState();
  });
  socket.on('hello', () => {
    if (active && active.trouble.has('socket')) {
      send({ type: 'call.resume', call_id: active.id, resume_token: active.token });
    }
  });
  socket.on('call.resumed', (frame) => {
    if (!active || active.id !== frame.call_id) return;
    active.trouble.delete('socket');
    showState();
    if (!['connected', 'completed'].includes(active.pc.iceConnectionState)) reoffer(active);
  });
  socket.on('call.reanswer', (frame) => {
    const current = active;
    if (!current || current.id !== frame.call_id || !current.next) return;
    const old = current.pc;
    const pc = current.pc = current.next;
    current.next = null;
    pc.setRemoteDescription({ type: 'answer', sdp: frame.sdp }).then(() => old.close(), () => {});
  });
  // The shopper's side is away (socket or media) or back.
  socket.on('call.reconnecting', (frame) => {
    if (!active || active.id !== frame.call_id) return;
    active.trouble.add('peer');
    showState();
  });
  socket.on('call.reconnected', (frame) => {
    if (!active || active.id !== frame.call_id) return;
    active.trouble.delete('peer');
    showState();
  });

  socket.on('call.transferred', (frame) => {
    if (active && active.id === frame.call_id) {
      finishActive(t('call_passed', { name: (frame.to && frame.to.name) || t('a_colleague') }));
    }
  });
  socket.on('call.transfer_failed', (frame) => {
    showAlert(t('alert_transfer_not_taken', { reason: reasonText(frame.reason || 'timeout') }));
    callTransferButton.disabled = false;
  });
  socket.on('error', (frame) => {
    // A resume refused (no_call, bad_resume_token, not_your_call): the call is over for us.
    if (active && active.trouble.has('socket') && ['no_call', 'bad_resume_token', 'not_your_call'].includes(frame.code)) {
      finishActive(t('call_ended_reason', { reason: reasonText('lost') }));
      return;
    }
    // The server refused our call.accept: nothing else will come for this call.
    if (active && active.accepted && !active.answered && !active.connected) {
      finishActive(t('could_not_take'));
    }
  });

  return {
    inCall: () => Boolean(active),
    tick() {
      for (const entry of ringing.values()) entry.waiting.textContent = waitingText(entry);
      if (active && active.connected) activeTimer.textContent = clock(Date.now() - active.connectedAt);
    },
  };
}
