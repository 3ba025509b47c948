/* callserver operator softphone.
 *
 * Speaks the operator side of docs/signaling.md over /ws/operator and answers calls with the
 * operator's microphone, and handles several text chats at once. Everything that comes from the
 * network is shown with textContent: shoppers can put HTML in their page titles, URLs, names and messages.
 */
(() => {
  'use strict';

  const RECONNECT_DELAYS_MS = [1000, 2000, 5000];
  const PING_EVERY_MS = 25000;
  const ICE_GATHERING_WAIT_MS = 2000;
  const RING_EVERY_MS = 3000; // ~1 s of tone, ~2 s of silence
  const ENDED_NOTICE_MS = 4000;
  const ALERT_MS = 10000;

  const $ = (id) => document.getElementById(id);
  const presenceSelect = $('presence');
  const banner = $('banner');
  const alertBox = $('alert');
  const incomingList = $('incoming');
  const noCalls = $('no-calls');
  const activeSection = $('active');
  const activeStatus = $('active-status');
  const activeTimer = $('active-timer');
  const muteButton = $('mute');
  const holdButton = $('hold');
  const hangupButton = $('hangup');
  const visitorEmpty = $('visitor-empty');
  const visitorFields = $('visitor-fields');
  const operatorName = $('operator-name');
  const remoteAudio = $('remote-audio');
  const callTransferTo = $('call-transfer-to');
  const callTransferButton = $('call-transfer');
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
  const leftList = $('left-messages');
  const noMessages = $('no-messages');

  let socket = null;
  let reconnectAttempt = 0;
  let pingTimer = null;
  let confirmedPresence = 'offline';

  const ringing = new Map(); // call id → { call, element, since, notification }
  let selectedId = null; // the ringing call whose visitor is shown
  let active = null; // the call being answered or held: { id, call, pc, stream, accepted, connected, held, ... }
  let activeNoticeTimer = null;

  // ---- small helpers -------------------------------------------------------------------------

  /** Builds an element; strings among the children become text nodes, never markup. */
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    for (const child of children) {
      if (child === null || child === undefined || child === '') continue;
      node.append(typeof child === 'string' ? document.createTextNode(child) : child);
    }
    return node;
  }

  /** A link for http(s) URLs only (no javascript: or data: from a shopper), plain text otherwise. */
  function safeLink(value) {
    const text = String(value);
    let url;
    try { url = new URL(text); } catch (e) { return document.createTextNode(text); }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') return document.createTextNode(text);
    return el('a', { href: url.href, target: '_blank', rel: 'noopener noreferrer' }, text);
  }

  function clock(ms) {
    const seconds = Math.max(0, Math.floor(ms / 1000));
    const minutes = Math.floor(seconds / 60);
    const rest = String(seconds % 60).padStart(2, '0');
    return minutes >= 60
      ? `${Math.floor(minutes / 60)}:${String(minutes % 60).padStart(2, '0')}:${rest}`
      : `${minutes}:${rest}`;
  }

  let alertTimer = null;
  function showAlert(message) {
    alertBox.textContent = message;
    clearTimeout(alertTimer);
    alertTimer = setTimeout(() => { alertBox.textContent = ''; }, ALERT_MS);
  }

  // ---- settings from /operator/config --------------------------------------------------------

  let configRequest = null;

  /** Resolves to the ICE servers; asked once, asked again after a failure. */
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
          if (body.texts) translate(body.texts, body.lang);
          return Array.isArray(body.ice_servers) ? body.ice_servers : [];
        })
        .catch((error) => {
          configRequest = null;
          throw error;
        });
    }
    return configRequest;
  }

  // ---- language: the server's pack for the operator's browser language ----------------------

  let TEXTS = {};

  /** A text of the language pack, with {name} placeholders filled (the socket opens once the pack is here). */
  function t(key, values) {
    let text = typeof TEXTS[key] === 'string' ? TEXTS[key] : key;
    for (const [name, value] of Object.entries(values || {})) text = text.split(`{${name}}`).join(String(value));
    return text;
  }

  // The page's own texts carry their key: data-i18n for the text, data-i18n-label for aria-label,
  // data-i18n-placeholder for a placeholder (the HTML's English shows until the pack is here).
  function translate(texts, lang) {
    TEXTS = texts;
    if (lang) document.documentElement.lang = lang;
    for (const node of document.querySelectorAll('[data-i18n]')) node.textContent = t(node.dataset.i18n);
    for (const node of document.querySelectorAll('[data-i18n-label]')) node.setAttribute('aria-label', t(node.dataset.i18nLabel));
    for (const node of document.querySelectorAll('[data-i18n-placeholder]')) node.placeholder = t(node.dataset.i18nPlaceholder);
    document.title = t('title');
  }

  function showOperator(operator) {
    operatorName.textContent = String(operator.name || operator.email || '');
  }

  // ---- the signaling socket ------------------------------------------------------------------

  function connect() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = socket = new WebSocket(`${scheme}//${location.host}/ws/operator`);
    ws.onopen = () => {
      reconnectAttempt = 0;
      banner.hidden = true;
      pingTimer = setInterval(() => send({ type: 'ping' }), PING_EVERY_MS);
    };
    ws.onmessage = (event) => onFrame(event.data);
    ws.onclose = (event) => {
      clearInterval(pingTimer);
      socket = null;
      presenceSelect.disabled = true;
      if (event.code === 4401) {
        location.href = '/operator/login';
        return;
      }
      banner.hidden = false;
      const delay = RECONNECT_DELAYS_MS[Math.min(reconnectAttempt, RECONNECT_DELAYS_MS.length - 1)];
      reconnectAttempt += 1;
      setTimeout(connect, delay);
    };
  }

  /** Sends one frame; false when the socket is down. */
  function send(frame) {
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  function onFrame(data) {
    let frame;
    try { frame = JSON.parse(data); } catch (e) { return; }
    if (!frame || typeof frame !== 'object') return;
    switch (frame.type) {
      case 'hello':
        if (frame.operator) showOperator(frame.operator);
        setPresence(frame.presence);
        replaceIncoming(Array.isArray(frame.incoming) ? frame.incoming : []);
        replaceChats(frame);
        break;
      case 'chat.assigned':
        addChat(frame.chat, frame.messages || [], true);
        if (frame.preview) showPreview(frame.chat.id, frame.preview);
        break;
      case 'chat.message':
        addMessage(frame.chat_id, frame.message, true);
        break;
      case 'chat.ack': {
        const entry = chats.get(frame.chat_id);
        if (entry && entry.pending.has(frame.client_id)) entry.pending.get(frame.client_id).remove();
        if (entry) entry.pending.delete(frame.client_id);
        addMessage(frame.chat_id, frame.message, false);
        break;
      }
      case 'chat.status': {
        // "delivered" and "read" come from the operator's and the visitor's sockets, which the
        // server serves concurrently: a late "delivered" must not take back a "read".
        const entry = chats.get(frame.chat_id);
        let changed = false;
        for (const id of frame.ids || []) {
          const message = entry && entry.messages.get(id);
          if (message && rank(frame.status) > rank(message.status)) { message.status = frame.status; changed = true; }
        }
        if (changed && selectedChat === frame.chat_id) renderChat();
        break;
      }
      case 'chat.typing':
        showPreview(frame.chat_id, String(frame.text || ''));
        break;
      case 'chat.queue':
        renderQueue(Array.isArray(frame.chats) ? frame.chats : []);
        break;
      case 'chat.closed':
        removeChat(frame.chat_id, frame.reason);
        break;
      case 'operators':
        colleagues = Array.isArray(frame.operators) ? frame.operators : [];
        renderColleagues();
        break;
      case 'canned':
        canned = Array.isArray(frame.replies) ? frame.replies : [];
        renderCanned();
        break;
      case 'message.new':
        if (frame.message) addLeftMessage(frame.message, true);
        break;
      case 'message.mail': {
        const item = leftList.querySelector(`[data-message-id="${CSS.escape(String(frame.id))}"]`);
        if (item) showMailState(item, frame.mail);
        break;
      }
      case 'message.handled': {
        const item = leftList.querySelector(`[data-message-id="${CSS.escape(String(frame.id))}"]`);
        if (item) item.remove();
        noMessages.hidden = leftList.children.length > 0;
        break;
      }
      case 'call.transferred':
        if (active && active.id === frame.call_id) {
          finishActive(t('call_passed', { name: (frame.to && frame.to.name) || t('a_colleague') }));
        }
        break;
      case 'call.transfer_failed':
        showAlert(t('alert_transfer_not_taken', { reason: reasonText(frame.reason || 'timeout') }));
        callTransferButton.disabled = false;
        break;
      case 'presence':
        setPresence(frame.status);
        break;
      case 'visitors':
        board = Array.isArray(frame.visitors) ? frame.visitors : [];
        renderBoard();
        break;
      case 'visitor.invited': {
        invitedHere.add(String(frame.visitor_id));
        renderBoard();
        break;
      }
      case 'call.incoming':
        if (frame.call && frame.call.id !== undefined) addIncoming(frame.call, true);
        break;
      case 'call.withdrawn':
        if (active && active.id === frame.call_id && !active.accepted) {
          finishActive(t('call_withdrawn', { reason: frame.reason ? reasonText(frame.reason) : t('r_no_longer_ringing') }));
        }
        removeIncoming(frame.call_id);
        break;
      case 'call.answer':
        if (active && active.id === frame.call_id && active.pc) {
          active.answered = true;
          activeStatus.textContent = t('connecting_audio');
          active.pc.setRemoteDescription({ type: 'answer', sdp: frame.sdp }).catch((error) => {
            showAlert(t('alert_audio_failed', { error: error.message }));
            hangup();
          });
        }
        break;
      case 'call.connected':
        if (active && active.id === frame.call_id) callConnected();
        break;
      case 'call.ended':
        if (active && active.id === frame.call_id) finishActive(t('call_ended_reason', { reason: reasonText(frame.reason || 'unknown') }));
        removeIncoming(frame.call_id);
        break;
      case 'error':
        showAlert(String(frame.message || frame.code || t('something_wrong')));
        // The server refused our call.accept: nothing else will come for this call.
        if (active && active.accepted && !active.answered && !active.connected) {
          finishActive(t('could_not_take'));
        }
        break;
      default: // pong, and frames a newer server may add
    }
  }

  // ---- presence ------------------------------------------------------------------------------

  function setPresence(status) {
    if (!['online', 'away', 'offline'].includes(status)) return;
    confirmedPresence = status;
    presenceSelect.value = status;
    presenceSelect.disabled = false;
  }

  presenceSelect.addEventListener('change', () => {
    if (!send({ type: 'presence.set', status: presenceSelect.value })) {
      presenceSelect.value = confirmedPresence;
      showAlert(t('alert_offline_status'));
    }
  });

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
    if (notify) entry.notification = desktopNotification(call);
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
    if (ringing.size > 0) startRinging();
    else stopRinging();
  }

  // ---- ringing: sound, title, desktop notification --------------------------------------------

  let audioContext = null;
  let ringTimer = null;
  let titleTimer = null;
  let notificationAsked = false;

  // Browsers only let a page make sound after the user has touched it, so the AudioContext is
  // created (or resumed) on an interaction; that is also a polite moment to ask for notifications.
  function onUserInteraction() {
    try {
      const AudioContextClass = window.AudioContext || window.webkitAudioContext;
      if (!audioContext && AudioContextClass) audioContext = new AudioContextClass();
      if (audioContext && audioContext.state === 'suspended') audioContext.resume().catch(() => {});
    } catch (e) { /* no sound then; the title and list still show the call */ }
    if ('Notification' in window && Notification.permission === 'default' && !notificationAsked) {
      notificationAsked = true;
      try {
        const request = Notification.requestPermission();
        if (request && request.catch) request.catch(() => {});
      } catch (e) { /* not supported here */ }
    }
  }
  document.addEventListener('pointerdown', onUserInteraction, true);
  document.addEventListener('keydown', onUserInteraction, true);

  function beep() {
    if (!audioContext || audioContext.state !== 'running' || active) return; // never over a call
    const start = audioContext.currentTime;
    const oscillator = audioContext.createOscillator();
    const gain = audioContext.createGain();
    for (let step = 0; step < 4; step += 1) { // two tones, alternating every quarter second
      oscillator.frequency.setValueAtTime(step % 2 ? 660 : 880, start + step * 0.25);
    }
    gain.gain.setValueAtTime(0, start);
    gain.gain.linearRampToValueAtTime(0.2, start + 0.02);
    gain.gain.setValueAtTime(0.2, start + 0.97);
    gain.gain.linearRampToValueAtTime(0, start + 1);
    oscillator.connect(gain).connect(audioContext.destination);
    oscillator.start(start);
    oscillator.stop(start + 1.05);
  }

  function startRinging() {
    if (ringTimer) return;
    try { beep(); } catch (e) { /* sound is a courtesy */ }
    ringTimer = setInterval(() => { try { beep(); } catch (e) { /* ditto */ } }, RING_EVERY_MS);
    let flash = false;
    titleTimer = setInterval(() => {
      flash = !flash;
      document.title = flash ? `☎ ${t('incoming_call')}` : t('title');
    }, 1000);
  }

  function stopRinging() {
    clearInterval(ringTimer);
    clearInterval(titleTimer);
    ringTimer = titleTimer = null;
    document.title = t('title');
  }

  function desktopNotification(call) {
    if (!('Notification' in window) || Notification.permission !== 'granted') return null;
    try {
      const notification = new Notification(t('incoming_call'), {
        body: [call.site, call.title || call.page].filter(Boolean).map(String).join(' — '),
        tag: `call-${call.id}`,
      });
      notification.onclick = () => { window.focus(); notification.close(); };
      return notification;
    } catch (e) {
      return null; // e.g. Chrome on Android only allows notifications from a service worker
    }
  }

  // ---- answering and the active call ---------------------------------------------------------

  async function answer(id) {
    const entry = ringing.get(id);
    if (!entry || active) return;
    clearTimeout(activeNoticeTimer);
    const current = active = { id, call: entry.call, accepted: false, answered: false, connected: false, held: false };
    removeIncoming(id);
    showActive(t('answering'));
    renderVisitor();

    let iceServers = [];
    try {
      iceServers = await loadConfig();
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

    try {
      const pc = current.pc = new RTCPeerConnection({ iceServers });
      pc.addEventListener('track', (event) => {
        remoteAudio.srcObject = event.streams[0] || new MediaStream([event.track]);
        remoteAudio.play().catch(() => {});
      });
      pc.addEventListener('connectionstatechange', () => {
        if (pc.connectionState === 'failed' && active === current) {
          showAlert(t('alert_audio_lost'));
          hangup();
        }
      });
      for (const track of current.stream.getAudioTracks()) pc.addTrack(track, current.stream);
      await pc.setLocalDescription(await pc.createOffer());
      // The server takes no trickled candidates, so the offer carries them all.
      await iceGathered(pc, ICE_GATHERING_WAIT_MS);
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
  }

  function inCallText() {
    return t('in_call', { who: String(active.call.site || t('a_visitor')) });
  }

  function setPressed(button, pressed, label) {
    button.setAttribute('aria-pressed', String(pressed));
    button.textContent = label;
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
    activeStatus.textContent = on ? t('on_hold') : inCallText();
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

  // ---- visitor info --------------------------------------------------------------------------

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

  function renderVisitor() {
    const entry = active || ringing.get(selectedId);
    visitorFields.replaceChildren();
    visitorEmpty.hidden = Boolean(entry);
    if (!entry) return;
    for (const [label, text] of visitorRows(entry.call)) {
      const isUrl = /^https?:\/\//i.test(text);
      visitorFields.append(el('dt', {}, label), el('dd', {}, isUrl ? safeLink(text) : text));
    }
  }

  // ---- chats ---------------------------------------------------------------------------------

  const chats = new Map(); // chat id → { chat, messages: Map(id → message), pending, tab, unread, preview }
  let selectedChat = null;
  let colleagues = [];
  let canned = [];
  let clientIds = 0;
  let lastTypingSent = 0;
  /** Why a chat's visitor could not call (the widget's fallback codes). */
  const fallbackTexts = () => ({
    microphone_denied: t('fb_microphone_denied'), microphone_failed: t('fb_microphone_failed'),
    no_webrtc: t('fb_no_webrtc'), ice_failed: t('fb_ice_failed'), no_answer: t('fb_no_answer'),
    all_busy: t('fb_all_busy'), declined: t('fb_declined'), failed: t('fb_failed'),
  });

  /** A call's end, withdrawal or failed transfer reason (the server's codes) in the operator's words. */
  function reasonText(code) {
    const texts = {
      completed: t('r_completed'), missed: t('r_missed'), abandoned: t('r_abandoned'), declined: t('r_declined'),
      failed: t('r_failed'), dropped: t('r_dropped'), lost: t('r_lost'), timeout: t('r_timeout'),
      answered_elsewhere: t('r_answered_elsewhere'), unknown: t('r_unknown'),
    };
    return Object.hasOwn(texts, code) ? texts[code] : String(code);
  }

  function replaceChats(frame) {
    for (const id of Array.from(chats.keys())) removeChat(id, null);
    for (const item of frame.chats || []) addChat(item.chat, item.messages || [], false);
    renderQueue(frame.queue || []);
    colleagues = frame.operators || [];
    renderColleagues();
    canned = frame.canned || [];
    renderCanned();
    leftList.replaceChildren();
    for (const message of (frame.left_messages || []).slice().reverse()) addLeftMessage(message, false);
    noMessages.hidden = leftList.children.length > 0;
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

  function visitorLabel(chat) {
    const visitor = chat.visitor || {};
    return String(visitor.name || visitor.email || visitor.phone
      || t('visitor_n', { id: String(visitor.token || chat.id).slice(0, 6) }));
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
    renderColleagues();
    markRead(entry);
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

  /** How far a message got: sent < delivered < read. */
  function rank(status) {
    return status === 'read' ? 2 : status === 'delivered' ? 1 : 0;
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
    if (selectedChat === null || Date.now() - lastTypingSent < 2000) return;
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

  function renderColleagues() {
    const online = colleagues.filter((c) => c.presence === 'online');
    for (const select of [chatTransferTo, callTransferTo]) {
      const chosen = select.value;
      select.replaceChildren(el('option', { value: '' }, online.length ? t('choose_colleague') : t('nobody_else_online')));
      for (const c of online) {
        const about = { name: c.name, chats: c.chats };
        const line = c.in_call ? t('colleague_in_call', about) : t('colleague', about);
        select.append(el('option', { value: String(c.id) }, line));
      }
      select.value = online.some((c) => String(c.id) === chosen) ? chosen : '';
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

  // ---- left messages -------------------------------------------------------------------------

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
    if (notify) chatAlert(t('new_left_message'), `${contact}: ${message.text}`);
  }

  // ---- chat alerts: a short sound, the title, a desktop notification ----------------------------

  let chatTitleTimer = null;
  function chatAlert(title, body) {
    try { beep(); } catch (e) { /* sound is a courtesy */ }
    if (!ringTimer && !chatTitleTimer) {
      let flashes = 0;
      chatTitleTimer = setInterval(() => {
        flashes += 1;
        document.title = flashes % 2 ? `💬 ${title}` : t('title');
        if (flashes >= 10 || (!document.hidden && flashes >= 4)) {
          clearInterval(chatTitleTimer);
          chatTitleTimer = null;
          if (!ringTimer) document.title = t('title');
        }
      }, 1000);
    }
    if (document.hidden && 'Notification' in window && Notification.permission === 'granted') {
      try {
        const notification = new Notification(title, { body: String(body).slice(0, 200), tag: 'callserver-chat' });
        notification.onclick = () => { window.focus(); notification.close(); };
      } catch (e) { /* e.g. only a service worker may notify here */ }
    }
  }

  // ---- the live visitors board ---------------------------------------------------------------

  const boardBody = $('visitors');
  const boardTable = boardBody.closest('table');
  const noVisitors = $('no-visitors');
  const visitorCount = $('visitor-count');
  const boardRows = new Map(); // visitor id → <tr>
  const invitedHere = new Set(); // visitors this softphone invited (until the server's board says so)
  let board = [];

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
      el('td', {}, action));
    if (focused && action.tagName === 'BUTTON') action.focus();
  }

  function invite(row, button) {
    if (!send({ type: 'visitor.invite', visitor_id: String(row.id), site_id: row.site_id })) {
      showAlert(t('alert_offline_invite'));
      return;
    }
    button.disabled = true;
  }

  // ---- clocks --------------------------------------------------------------------------------

  setInterval(() => {
    const now = Date.now();
    for (const entry of ringing.values()) entry.waiting.textContent = waitingText(entry);
    if (active && active.connected) activeTimer.textContent = clock(now - active.connectedAt);
    for (const tr of boardRows.values()) {
      const cell = tr.querySelector('.time');
      if (cell && tr.row) cell.textContent = timeOnSite(tr.row);
    }
  }, 1000);

  // ---- start ---------------------------------------------------------------------------------

  // The socket opens once the language pack is here, so whatever it brings is shown in the operator's
  // language; until then (and while the settings cannot be loaded) the page says it is reconnecting.
  let configAttempt = 0;
  function start() {
    loadConfig().then(connect, () => {
      banner.hidden = false;
      const delay = RECONNECT_DELAYS_MS[Math.min(configAttempt, RECONNECT_DELAYS_MS.length - 1)];
      configAttempt += 1;
      setTimeout(start, delay);
    });
  }
  start();
})();
