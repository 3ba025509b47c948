/* callserver web button.
 *
 * A shop embeds it with
 *   <script src="https://HOST/widget.js" data-site="KEY" async></script>
 * It renders inside an open shadow root (so the shop's CSS can't reach it and ours can't leak out),
 * asks for the microphone, and speaks the widget side of docs/signaling.md.
 * Plain ES2020, no dependencies: it loads on every page of a shop, so it stays small.
 */
(() => {
  'use strict';

  const queued = window.CallButton;
  if (queued && typeof queued.visitorToken === 'function') return; // the script was included twice

  const script = document.currentScript ||
    document.querySelector('script[data-site][src*="widget.js"]');
  if (!script || !script.dataset.site) {
    console.warn('CallButton: no <script data-site="KEY" src=".../widget.js"> tag found');
    return;
  }
  const siteKey = script.dataset.site;
  const base = new URL(script.src, location.href).origin;
  const wsBase = base.replace(/^http/, 'ws');

  const TEXT = {
    idle: 'Talk to us — free, from your browser',
    mic: 'Allow microphone access to start the call',
    connecting: 'Connecting…',
    waiting: 'Waiting for an operator…',
    recorded: 'This call may be recorded.',
    micBlocked: 'Microphone access was blocked. Allow it in the browser to call us.',
    micBroken: 'Your microphone could not be started. Check it and try again.',
    noWebrtc: "Your browser can't make calls. Please use a recent Chrome, Firefox or Safari.",
    unreachable: "Can't reach the call service. Please try again later.",
    origin_not_allowed: "Calls aren't enabled for this website.",
    unknown_site: "This call button isn't set up correctly (unknown site).",
    iceFailed: 'The call could not connect.',
  };
  const ENDED = {
    completed: 'Call ended. Thank you!',
    missed: 'Nobody could answer right now.',
    declined: "The operator couldn't take the call.",
    failed: 'The call was interrupted.',
    dropped: 'The call was interrupted.',
    abandoned: 'Call cancelled.',
  };

  // ---- visitor token -------------------------------------------------------------------------

  const TOKEN_KEY = 'callbutton.visitor';
  let memoryToken = null; // used when localStorage is unavailable (sandboxed frames, strict privacy)

  function visitorToken() {
    let token = null;
    try { token = localStorage.getItem(TOKEN_KEY); } catch (e) { /* storage blocked */ }
    token = token || memoryToken;
    if (!token) {
      token = newToken();
      storeToken(token);
    }
    return token;
  }

  function storeToken(token) {
    memoryToken = token;
    try { localStorage.setItem(TOKEN_KEY, token); } catch (e) { /* storage blocked */ }
  }

  function newToken() {
    if (crypto.randomUUID) return crypto.randomUUID();
    // randomUUID needs a secure context; shops on plain http still get a random token.
    return Array.from(crypto.getRandomValues(new Uint8Array(16)),
      (b) => b.toString(16).padStart(2, '0')).join('');
  }

  // ---- configuration -------------------------------------------------------------------------

  let config = null;
  let configProblem = null; // null | 'unreachable' | 'origin_not_allowed' | 'unknown_site'

  async function loadConfig() {
    try {
      const res = await fetch(`${base}/widget/config?site=${encodeURIComponent(siteKey)}`,
        { credentials: 'omit' });
      let body = null;
      try { body = await res.json(); } catch (e) { /* not JSON */ }
      const code = body && body.error && body.error.code;
      if (res.ok && body) {
        config = body;
        configProblem = null;
        applySite(body.site);
        if (body.chat === true) addChatButton();
      } else if (code === 'origin_not_allowed' || res.status === 403) {
        configProblem = 'origin_not_allowed';
      } else if (code === 'unknown_site' || res.status === 404) {
        configProblem = 'unknown_site';
      } else {
        configProblem = 'unreachable';
      }
    } catch (e) {
      configProblem = 'unreachable';
    }
  }

  let site = { name: '', records_calls: false };

  function applySite(info) {
    if (!info) return;
    site = Object.assign({}, site, info);
    const title = site.name ? `Call ${site.name}` : 'Call us';
    heading.textContent = title;
    panel.setAttribute('aria-label', title);
    render();
  }

  // ---- visitor context -----------------------------------------------------------------------

  const CONTEXT_KEYS = { cartValue: 'cart_value', currency: 'currency', productPrice: 'product_price', sku: 'sku' };
  const NUMERIC = new Set(['cart_value', 'product_price']);
  const shopContext = {};
  let visitor = null;

  function setContext(values) {
    for (const [name, value] of Object.entries(values || {})) {
      const key = CONTEXT_KEYS[name] || (Object.values(CONTEXT_KEYS).includes(name) ? name : null);
      if (!key) continue;
      if (value === null || value === undefined || value === '') {
        delete shopContext[key];
      } else if (NUMERIC.has(key)) {
        // A mistyped field makes the server refuse the whole offer, so never send a non-number.
        const number = Number(value);
        if (Number.isFinite(number)) shopContext[key] = number;
      } else {
        shopContext[key] = String(value);
      }
    }
  }

  function identify(values) {
    const who = {};
    for (const key of ['name', 'email', 'phone']) {
      if (values && values[key]) who[key] = String(values[key]);
    }
    visitor = Object.keys(who).length ? who : null;
  }

  // Product and price from the page's schema.org JSON-LD, when the shop didn't set them.
  function pageProduct() {
    for (const tag of document.querySelectorAll('script[type="application/ld+json"]')) {
      let data;
      try { data = JSON.parse(tag.textContent); } catch (e) { continue; }
      for (const item of [].concat((data && data['@graph']) || data)) {
        if (!item || ![].concat(item['@type']).includes('Product')) continue;
        const offer = [].concat(item.offers || [])[0] || {};
        const found = {};
        const price = offer.price ?? offer.lowPrice;
        if (price !== undefined && price !== null && price !== '' && Number.isFinite(Number(price))) {
          found.product_price = Number(price);
        }
        if (offer.priceCurrency) found.currency = String(offer.priceCurrency);
        if (item.sku) found.sku = String(item.sku);
        return found;
      }
    }
    return {};
  }

  function callContext() {
    const params = new URLSearchParams(location.search);
    const context = { page: location.href };
    if (document.title) context.title = document.title;
    if (document.referrer) context.referrer = document.referrer;
    const utm = {};
    for (const key of ['source', 'medium', 'campaign', 'term', 'content']) {
      const value = params.get(`utm_${key}`);
      if (value) utm[key] = value;
    }
    if (Object.keys(utm).length) context.utm = utm;
    const search = ['q', 's', 'search', 'query'].map((key) => params.get(key)).find(Boolean);
    if (search) context.search = search;
    let product = {};
    try { product = pageProduct(); } catch (e) { /* odd markup must not stop a call */ }
    Object.assign(context, product, shopContext);
    if (visitor) context.visitor = visitor;
    return context;
  }

  // ---- events --------------------------------------------------------------------------------

  const listeners = {};

  function on(event, fn) {
    if (!listeners[event]) listeners[event] = new Set();
    listeners[event].add(fn);
    return () => listeners[event].delete(fn);
  }

  function emit(event, detail) {
    for (const fn of Array.from(listeners[event] || [])) {
      try { fn(detail); } catch (e) { console.error(e); }
    }
  }

  // ---- user interface ------------------------------------------------------------------------

  const CSS = `
    [hidden] { display: none !important; }
    .cb { font: 15px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328; }
    button { font: inherit; cursor: pointer; border: 0; border-radius: 8px; padding: 10px 16px; }
    button:focus-visible { outline: 3px solid #f59e0b; outline-offset: 2px; }
    .launcher { width: 60px; height: 60px; border-radius: 50%; padding: 0; display: grid;
      place-items: center; background: #1d6f42; color: #fff; box-shadow: 0 4px 14px rgba(0,0,0,.3); }
    .launcher svg { width: 28px; height: 28px; fill: currentColor; }
    .launcher.live { background: #b42318; }
    .panel { position: absolute; right: 0; bottom: 72px; width: 300px; box-sizing: border-box;
      background: #fff; border-radius: 12px; padding: 16px; box-shadow: 0 8px 30px rgba(0,0,0,.25); }
    .head { display: flex; align-items: center; justify-content: space-between; gap: 8px; }
    .head h2 { font-size: 17px; margin: 0; font-weight: 600; }
    .close { background: transparent; color: #57606a; font-size: 22px; line-height: 1; padding: 4px 10px; }
    .status { margin: 12px 0 4px; min-height: 1.4em; }
    .timer { margin: 0; font-variant-numeric: tabular-nums; font-size: 22px; }
    .note { margin: 4px 0 0; font-size: 13px; color: #57606a; }
    .actions { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 12px; }
    .call { background: #1d6f42; color: #fff; flex: 1; }
    .hangup { background: #b42318; color: #fff; flex: 1; }
    .mute, .chat { background: #eaeef2; color: #1f2328; }
    .mute[aria-pressed="true"] { background: #1f2328; color: #fff; }
    @media (max-width: 479px) {
      .panel { position: fixed; left: 0; right: 0; bottom: 0; width: auto; border-radius: 12px 12px 0 0; }
    }`;

  const PHONE_ICON = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M6.6 10.8a15.1 15.1 0 0 0 6.6 6.6l2.2-2.2c.3-.3.7-.4 1-.2 1.1.4 2.3.6 3.6.6.6 0 1 .4 1 1V20c0 .6-.4 1-1 1A17 17 0 0 1 3 4c0-.6.4-1 1-1h3.5c.6 0 1 .4 1 1 0 1.3.2 2.5.6 3.6.1.3 0 .7-.2 1z"/></svg>';

  const host = document.createElement('div');
  host.setAttribute('data-callbutton', '');
  // Inline, so no shop rule can outrank it; `all: initial` stops the shop's inherited styles.
  host.setAttribute('style', 'all:initial;position:fixed;bottom:20px;right:20px;z-index:2147483000;');
  const root = host.attachShadow({ mode: 'open' });
  // Static markup only: everything that comes from the network is set with textContent below.
  root.innerHTML = `<style>${CSS}</style>
    <div class="cb">
      <div class="panel" role="dialog" aria-label="Call us" hidden>
        <div class="head">
          <h2>Call us</h2>
          <button class="close" type="button" data-testid="cb-close" aria-label="Close">×</button>
        </div>
        <p class="status" data-testid="cb-status" aria-live="polite"></p>
        <p class="timer" role="timer" aria-label="Call duration" hidden>00:00</p>
        <p class="note" hidden></p>
        <div class="actions">
          <button class="call" type="button" data-testid="cb-call" aria-label="Start a call">Call now</button>
          <button class="mute" type="button" data-testid="cb-mute" aria-pressed="false"
            aria-label="Mute microphone" hidden>Mute</button>
          <button class="hangup" type="button" data-testid="cb-hangup" aria-label="End call" hidden>Hang up</button>
        </div>
        <audio autoplay></audio>
      </div>
      <button class="launcher" type="button" data-testid="cb-launcher" aria-label="Call us"
        aria-expanded="false">${PHONE_ICON}</button>
    </div>`;

  const $ = (selector) => root.querySelector(selector);
  const panel = $('.panel');
  const heading = $('.head h2');
  const statusLine = $('.status');
  const timerLine = $('.timer');
  const note = $('.note');
  const actions = $('.actions');
  const callButton = $('.call');
  const muteButton = $('.mute');
  const hangupButton = $('.hangup');
  const launcher = $('.launcher');
  const remoteAudio = $('audio');

  note.textContent = TEXT.recorded;

  function addChatButton() {
    if ($('.chat')) return;
    const chatButton = document.createElement('button');
    chatButton.type = 'button';
    chatButton.className = 'chat';
    chatButton.dataset.testid = 'cb-chat-open';
    chatButton.setAttribute('aria-label', 'Chat with us');
    chatButton.textContent = 'Chat';
    chatButton.addEventListener('click', () => chat());
    actions.appendChild(chatButton);
  }

  // view: 'idle' | 'mic' | 'connecting' | 'waiting' | 'incall' | 'ended'
  let view = 'idle';
  let statusText = TEXT.idle;

  function show(nextView, text) {
    view = nextView;
    statusText = text;
    render();
  }

  function render() {
    const live = ['mic', 'connecting', 'waiting', 'incall'].includes(view);
    const hadFocus = root.activeElement;
    let text = statusText;
    if (view === 'waiting' && site.records_calls) text = `${TEXT.waiting} ${TEXT.recorded}`;
    statusLine.textContent = text;
    note.hidden = !(site.records_calls && ['idle', 'mic', 'connecting'].includes(view));
    callButton.hidden = live;
    callButton.textContent = view === 'ended' ? 'Call again' : 'Call now';
    hangupButton.hidden = !live;
    hangupButton.textContent = view === 'incall' ? 'Hang up' : 'Cancel';
    muteButton.hidden = !(view === 'waiting' || view === 'incall');
    timerLine.hidden = view !== 'incall';
    launcher.classList.toggle('live', live);
    // A button that just hid would drop keyboard focus (and Escape) out of the panel.
    if (hadFocus && hadFocus.hidden && !panel.hidden) (live ? hangupButton : callButton).focus();
  }

  function open() {
    if (!host.isConnected) mount();
    if (!panel.hidden) return;
    panel.hidden = false;
    launcher.setAttribute('aria-expanded', 'true');
    (callButton.hidden ? hangupButton : callButton).focus();
    emit('open', {});
  }

  function close() {
    if (panel.hidden) return;
    const focusInside = panel.contains(root.activeElement);
    panel.hidden = true;
    launcher.setAttribute('aria-expanded', 'false');
    if (focusInside) launcher.focus(); // keep keyboard users where they were
    emit('close', {});
  }

  function chat() {
    // Chat arrives later; for now the panel opens and shows the chat button when the site has chat.
    open();
  }

  launcher.addEventListener('click', () => (panel.hidden ? open() : close()));
  $('.close').addEventListener('click', close);
  callButton.addEventListener('click', () => startCall());
  hangupButton.addEventListener('click', hangup);
  muteButton.addEventListener('click', toggleMute);
  root.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && !panel.hidden) close();
  });

  // ---- the call ------------------------------------------------------------------------------

  let call = null; // the call being set up or held: { pc, ws, stream, callId, connected, ... }

  function fail(code, message) {
    show('ended', message);
    emit('error', { code, message });
  }

  async function startCall() {
    if (call) return;
    open();
    if (!window.RTCPeerConnection || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      fail('no_webrtc', TEXT.noWebrtc);
      return;
    }
    const current = call = { done: false };
    show('connecting', TEXT.connecting);
    await configReady;
    if (configProblem === 'unreachable') await (configReady = loadConfig()); // it may be back
    if (call !== current) return;
    if (configProblem) {
      call = null;
      fail(configProblem, TEXT[configProblem]);
      return;
    }
    emit('call.started', {});
    show('mic', TEXT.mic);
    try {
      current.stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (e) {
      const blocked = e && (e.name === 'NotAllowedError' || e.name === 'NotFoundError' || e.name === 'SecurityError');
      endCall(current, 'failed', blocked ? TEXT.micBlocked : TEXT.micBroken, blocked ? 'microphone_blocked' : 'microphone_failed');
      return;
    }
    if (current.done) { // cancelled while the browser asked
      current.stream.getTracks().forEach((track) => track.stop());
      return;
    }
    show('connecting', TEXT.connecting);
    try {
      const pc = current.pc = new RTCPeerConnection({ iceServers: config.ice_servers || [] });
      pc.addEventListener('track', (event) => {
        remoteAudio.srcObject = event.streams[0] || new MediaStream([event.track]);
        remoteAudio.play().catch(() => { /* autoplay blocked: the click already counted in practice */ });
      });
      const watchConnection = () => {
        if (pc.connectionState === 'failed' || pc.iceConnectionState === 'failed') {
          send(current, { type: 'call.hangup' });
          endCall(current, 'failed', TEXT.iceFailed, 'ice_failed');
        }
      };
      pc.addEventListener('connectionstatechange', watchConnection);
      pc.addEventListener('iceconnectionstatechange', watchConnection);
      for (const track of current.stream.getAudioTracks()) pc.addTrack(track, current.stream);
      await pc.setLocalDescription(await pc.createOffer());
      // The server answers once with all its candidates and takes none later, so send ours in the offer.
      await iceGathered(pc, 2000);
    } catch (e) {
      endCall(current, 'failed', TEXT.iceFailed, 'webrtc_failed');
      return;
    }
    if (current.done) return;
    openSocket(current);
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

  function openSocket(current) {
    const url = `${wsBase}/ws/widget?site=${encodeURIComponent(siteKey)}&visitor=${encodeURIComponent(visitorToken())}`;
    let ws;
    try {
      ws = current.ws = new WebSocket(url);
    } catch (e) {
      endCall(current, 'failed', TEXT.unreachable, 'unreachable');
      return;
    }
    ws.onopen = () => {
      current.opened = true;
      send(current, { type: 'call.offer', sdp: current.pc.localDescription.sdp, context: callContext() });
      current.ping = setInterval(() => send(current, { type: 'ping' }), 25000);
    };
    ws.onmessage = (event) => onFrame(current, event.data);
    ws.onclose = (event) => {
      if (event.code === 4403) endCall(current, 'failed', TEXT.origin_not_allowed, 'origin_not_allowed');
      else if (event.code === 4404) endCall(current, 'failed', TEXT.unknown_site, 'unknown_site');
      else if (!current.opened) endCall(current, 'failed', TEXT.unreachable, 'unreachable');
      else endCall(current, 'dropped', ENDED.dropped, 'connection_lost');
    };
  }

  function send(current, frame) {
    if (current.ws && current.ws.readyState === WebSocket.OPEN) current.ws.send(JSON.stringify(frame));
  }

  function onFrame(current, data) {
    let frame;
    try { frame = JSON.parse(data); } catch (e) { return; }
    if (!frame || current.done) return;
    switch (frame.type) {
      case 'hello':
        if (frame.visitor_token) storeToken(String(frame.visitor_token));
        applySite(frame.site);
        break;
      case 'call.answer':
        current.callId = frame.call_id;
        current.pc.setRemoteDescription({ type: 'answer', sdp: frame.sdp }).catch(() => {
          send(current, { type: 'call.hangup' });
          endCall(current, 'failed', TEXT.iceFailed, 'bad_answer');
        });
        if (!current.connected) show('waiting', TEXT.waiting);
        break;
      case 'call.ringing':
        current.callId = frame.call_id;
        if (!current.connected) show('waiting', TEXT.waiting);
        break;
      case 'call.connected': {
        const name = (frame.operator && frame.operator.name) || 'our team';
        current.connected = true;
        const startedAt = Date.now();
        const tick = () => { timerLine.textContent = duration(Date.now() - startedAt); };
        tick();
        current.timer = setInterval(tick, 1000);
        show('incall', `In call with ${name}`);
        emit('call.connected', { operator: { name } });
        break;
      }
      case 'call.ended':
        endCall(current, frame.reason, ENDED[frame.reason] || ENDED.failed);
        break;
      case 'error': {
        const message = String(frame.message || 'Something went wrong.');
        if (!current.callId) {
          endCall(current, 'failed', message, String(frame.code || 'error'));
        } else {
          statusLine.textContent = message;
          emit('error', { code: frame.code, message });
        }
        break;
      }
      default: // pong, and frames a newer server may add
    }
  }

  function duration(ms) {
    const seconds = Math.floor(ms / 1000);
    return `${String(Math.floor(seconds / 60)).padStart(2, '0')}:${String(seconds % 60).padStart(2, '0')}`;
  }

  // Releases everything the call holds, once, whichever way it ended.
  function endCall(current, reason, text, errorCode) {
    if (current.done) return;
    current.done = true;
    if (call === current) call = null;
    clearInterval(current.timer);
    clearInterval(current.ping);
    if (current.ws) {
      current.ws.onopen = current.ws.onmessage = current.ws.onclose = null;
      current.ws.close(1000);
    }
    if (current.pc) current.pc.close();
    if (current.stream) current.stream.getTracks().forEach((track) => track.stop());
    remoteAudio.srcObject = null;
    muteButton.setAttribute('aria-pressed', 'false');
    muteButton.setAttribute('aria-label', 'Mute microphone');
    muteButton.textContent = 'Mute';
    show('ended', text);
    if (errorCode) emit('error', { code: errorCode, message: text });
    emit('call.ended', { reason });
  }

  function hangup() {
    const current = call;
    if (!current) return;
    send(current, { type: 'call.hangup' });
    endCall(current, current.connected ? 'completed' : 'abandoned',
      current.connected ? ENDED.completed : ENDED.abandoned);
  }

  function toggleMute() {
    if (!call || !call.stream) return;
    const muted = muteButton.getAttribute('aria-pressed') !== 'true';
    call.stream.getAudioTracks().forEach((track) => { track.enabled = !muted; });
    muteButton.setAttribute('aria-pressed', String(muted));
    muteButton.setAttribute('aria-label', muted ? 'Unmute microphone' : 'Mute microphone');
    muteButton.textContent = muted ? 'Unmute' : 'Mute';
  }

  // ---- start ---------------------------------------------------------------------------------

  function mount() {
    if (!host.isConnected && document.body) document.body.appendChild(host);
  }

  render();
  let configReady = loadConfig();
  if (document.body) mount();
  else document.addEventListener('DOMContentLoaded', mount);

  const api = {
    open,
    call: () => { startCall(); },
    chat,
    identify,
    setContext,
    visitorToken,
    on,
  };
  window.CallButton = api;

  // Calls made before the script loaded: window.CallButton = window.CallButton || []; CallButton.push([...]).
  if (Array.isArray(queued)) {
    for (const item of queued) {
      const [method, ...args] = [].concat(item);
      if (typeof api[method] === 'function') {
        try { api[method](...args); } catch (e) { console.error(e); }
      }
    }
  }
})();
