/* callserver web button.
 *
 * A shop embeds it with
 *   <script src="https://HOST/widget.js" data-site="KEY" async></script>
 * It renders inside an open shadow root (so the shop's CSS can't reach it and ours can't leak out),
 * asks for the microphone, and speaks the widget side of docs/signaling.md. When a call can't happen
 * it carries the shopper on to text chat, and when nobody is online, to "leave a message".
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
    chatInstead: ' You can chat with us instead.',
    nobody: "Nobody is available right now. Leave a message and we'll get back to you.",
    no_answer: 'Nobody could answer in time.',
    all_busy: 'All our operators are busy right now.',
    left: "Thank you! We'll get back to you soon.",
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
    .log { list-style: none; margin: 12px 0 0; padding: 0; max-height: 260px; overflow-y: auto; }
    .log li { margin: 4px 0; padding: 6px 10px; border-radius: 8px; background: #eaeef2; white-space: pre-wrap;
      overflow-wrap: anywhere; }
    .log .visitor { background: #d8f0e0; margin-left: 32px; }
    .log .system { background: none; color: #57606a; font-size: 13px; padding: 2px 0; }
    .log .failed { background: #fde2e1; }
    .log small { display: block; color: #57606a; font-size: 12px; }
    form { display: flex; flex-direction: column; gap: 6px; margin-top: 8px; }
    input, textarea { font: inherit; border: 1px solid #8c959f; border-radius: 6px; padding: 6px 8px; }
    .say, .mailme { flex-direction: row; }
    .say textarea, .mailme input { flex: 1; min-width: 0; }
    .send { background: #1d6f42; color: #fff; }
    .typing, .mailme { font-size: 13px; color: #57606a; margin: 4px 0 0; }
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
        <div class="chatbox" hidden>
          <ol class="log" data-testid="cb-chat-log" aria-label="Conversation" aria-live="polite"></ol>
          <p class="typing" hidden></p>
          <form class="say">
            <textarea data-testid="cb-chat-input" rows="2" maxlength="4000" aria-label="Your message"
              placeholder="Type your message"></textarea>
            <button class="send" type="submit" data-testid="cb-chat-send">Send</button>
          </form>
          <form class="mailme">
            <input type="email" name="email" aria-label="E-mail for a transcript" placeholder="E-mail me this chat">
            <button type="submit">Send</button>
          </form>
        </div>
        <form class="offline" data-testid="cb-offline-form" hidden>
          <input name="name" maxlength="200" aria-label="Your name" placeholder="Your name">
          <input name="email" maxlength="320" required aria-label="E-mail or phone" placeholder="E-mail or phone">
          <textarea name="message" rows="3" maxlength="4000" required aria-label="Message"
            placeholder="Your message"></textarea>
          <button class="send" type="submit" data-testid="cb-offline-send">Send message</button>
        </form>
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
  const chatBox = $('.chatbox');
  const chatLog = $('.log');
  const typingLine = $('.typing');
  const sayForm = $('.say');
  const chatInput = $('.say textarea');
  const mailForm = $('.mailme');
  const offlineForm = $('.offline');

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
    render();
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
    const chatButton = $('.chat');
    if (chatButton) chatButton.hidden = live || (!chatBox.hidden && chatState !== null) || !offlineForm.hidden;
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
    if (chatState) markRead();
  }

  function close() {
    if (panel.hidden) return;
    const focusInside = panel.contains(root.activeElement);
    panel.hidden = true;
    launcher.setAttribute('aria-expanded', 'false');
    if (focusInside) launcher.focus(); // keep keyboard users where they were
    emit('close', {});
  }

  // ---- chat and leave-a-message ---------------------------------------------------------------

  const CHAT_KEY = 'callbutton.chat';
  let chatWs = null;
  let chatState = null; // { id, state, position, operator } once the server has a chat for us
  let wantChat = false; // chat.start goes out once the socket says hello
  let fallback = null; // { fallback, call_id }: why the last call didn't happen
  let clientIds = 0;
  let typingTimer = null;
  let lastTyping = 0;
  let restoreTimer = null;
  const shown = new Map(); // message id (or client id) → list item

  function remember(on) {
    try { if (on) localStorage.setItem(CHAT_KEY, '1'); else localStorage.removeItem(CHAT_KEY); } catch (e) { /* */ }
  }

  function showChat() {
    open();
    offlineForm.hidden = true;
    chatBox.hidden = false;
    render();
  }

  function chat() {
    showChat();
    wantChat = true;
    if (chatWs && chatWs.readyState === WebSocket.OPEN) startChat();
    else connectChat();
    chatInput.focus();
  }

  function startChat() {
    wantChat = false;
    chatSend(Object.assign({ type: 'chat.start', context: callContext() }, fallback || {}));
  }

  function connectChat() {
    if (chatWs) return;
    const ws = chatWs = new WebSocket(`${wsBase}/ws/widget?site=${encodeURIComponent(siteKey)}&visitor=${encodeURIComponent(visitorToken())}`);
    ws.onmessage = (event) => onChatFrame(event.data);
    ws.onclose = (event) => {
      chatWs = null;
      // A short network drop must not end the conversation: come back while a chat is open.
      if (chatState && chatState.state !== 'closed' && event.code < 4000) setTimeout(connectChat, 2000);
    };
  }

  function chatSend(frame) {
    if (chatWs && chatWs.readyState === WebSocket.OPEN) chatWs.send(JSON.stringify(frame));
    else return false;
    return true;
  }

  function onChatFrame(data) {
    let frame;
    try { frame = JSON.parse(data); } catch (e) { return; }
    if (!frame) return;
    switch (frame.type) {
      case 'hello':
        if (frame.visitor_token) storeToken(String(frame.visitor_token));
        if (wantChat) startChat();
        else restoreTimer = setTimeout(() => { if (!chatState) { remember(false); chatWs && chatWs.close(); } }, 3000);
        break;
      case 'chat.history':
        clearTimeout(restoreTimer);
        chatLog.replaceChildren();
        shown.clear();
        for (const message of frame.messages || []) showMessage(message);
        showChat();
        setChat(frame.chat);
        markRead();
        break;
      case 'chat.state':
        setChat(frame.chat);
        break;
      case 'chat.ack': {
        const item = shown.get(`c${frame.client_id}`);
        if (item) item.remove();
        showMessage(frame.message);
        break;
      }
      case 'chat.message':
        showMessage(frame.message);
        if (frame.message && frame.message.sender !== 'visitor') typing(false);
        markRead();
        break;
      case 'chat.status':
        for (const id of frame.ids || []) setTick(shown.get(id), frame.status);
        break;
      case 'chat.typing':
        typing(Boolean(frame.active));
        break;
      case 'chat.call_offered':
        offerCall(frame.operator && frame.operator.name);
        break;
      case 'chat.transcript':
        mailForm.querySelector('input').placeholder = frame.status === 'failed'
          ? 'The transcript could not be sent' : frame.status === 'sent' ? 'Transcript sent' : 'Sending…';
        break;
      case 'message.left':
        offlineForm.hidden = true;
        show('ended', TEXT.left);
        break;
      case 'error':
        if (frame.code === 'nobody_online') {
          showOffline(TEXT.nobody);
        } else if (frame.client_id) {
          const item = shown.get(`c${frame.client_id}`);
          if (item) item.classList.add('failed');
          statusLine.textContent = String(frame.message || frame.code);
        } else {
          statusLine.textContent = String(frame.message || frame.code);
        }
        emit('error', { code: frame.code, message: frame.message });
        break;
      default:
    }
  }

  function setChat(info) {
    if (!info) return;
    chatState = info;
    remember(info.state !== 'closed');
    const name = info.operator && info.operator.name;
    // The call's own status wins while a call is on.
    if (!call) {
      statusText = info.state === 'closed' ? 'Chat ended.'
        : name ? `Chatting with ${name}`
          : `Waiting for an operator — you are number ${info.position || 1} in the queue.`;
    }
    sayForm.hidden = info.state === 'closed';
    if (info.state === 'closed') chatState = null;
    render();
  }

  function showMessage(message) {
    if (!message || shown.has(message.id)) return;
    const item = document.createElement('li');
    item.className = String(message.sender);
    if (message.sender === 'operator' && message.operator) {
      const who = document.createElement('small');
      who.textContent = String(message.operator.name);
      item.append(who);
    }
    item.append(document.createTextNode(String(message.text)));
    shown.set(message.id, item);
    if (message.sender === 'visitor') setTick(item, message.status);
    chatLog.append(item);
    chatLog.scrollTop = chatLog.scrollHeight;
  }

  function setTick(item, status) {
    if (!item || item.className.indexOf('visitor') < 0) return;
    let tick = item.querySelector('.tick');
    if (!tick) {
      tick = document.createElement('small');
      tick.className = 'tick';
      item.append(tick);
    }
    if (tick.dataset.status === 'read') return;
    tick.dataset.status = status;
    tick.textContent = status === 'read' ? '✓✓ read' : status === 'delivered' ? '✓ delivered' : 'sent';
  }

  function typing(on) {
    clearTimeout(typing.timer);
    const name = chatState && chatState.operator && chatState.operator.name;
    typingLine.textContent = `${name || 'The operator'} is typing…`;
    typingLine.hidden = !on;
    if (on) typing.timer = setTimeout(() => { typingLine.hidden = true; }, 6000);
  }

  function markRead() {
    if (panel.hidden || document.visibilityState === 'hidden') return;
    const ids = Array.from(shown.keys()).filter((id) => typeof id === 'number');
    if (ids.length) chatSend({ type: 'chat.read', up_to: Math.max(...ids) });
  }

  function offerCall(name) {
    const item = document.createElement('li');
    item.className = 'system';
    const accept = document.createElement('button');
    accept.type = 'button';
    accept.className = 'call';
    accept.dataset.testid = 'cb-accept-call';
    accept.textContent = `Call ${name || 'us'} now`;
    accept.addEventListener('click', () => { accept.disabled = true; startCall(chatState && chatState.id); });
    item.append(accept);
    chatLog.append(item);
    chatLog.scrollTop = chatLog.scrollHeight;
  }

  // The operator sees what is being typed before it is sent, at most every 300 ms.
  function sendTyping() {
    clearTimeout(typingTimer);
    const wait = 300 - (Date.now() - lastTyping);
    if (wait > 0) { typingTimer = setTimeout(sendTyping, wait); return; }
    lastTyping = Date.now();
    if (chatState) chatSend({ type: 'chat.typing', text: chatInput.value });
  }

  chatInput.addEventListener('input', sendTyping);
  chatInput.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey) { event.preventDefault(); sayForm.requestSubmit(); }
  });
  sayForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = chatInput.value.trim();
    if (!text) return;
    const id = String(++clientIds);
    if (!chatSend({ type: 'chat.send', text, client_id: id })) {
      statusLine.textContent = TEXT.unreachable;
      return;
    }
    clearTimeout(typingTimer);
    chatInput.value = '';
    const item = document.createElement('li');
    item.className = 'visitor';
    item.textContent = text;
    item.style.opacity = '.6';
    shown.set(`c${id}`, item);
    chatLog.append(item);
    chatLog.scrollTop = chatLog.scrollHeight;
  });
  mailForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const email = mailForm.elements.email.value.trim();
    if (email && chatSend({ type: 'chat.transcript', email })) mailForm.elements.email.value = '';
  });

  function showOffline(reason) {
    open();
    chatBox.hidden = true;
    offlineForm.hidden = false;
    show('ended', reason);
    offlineForm.elements.message.focus();
  }

  offlineForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const f = offlineForm.elements;
    const contact = f.email.value.trim();
    const frame = { type: 'message.leave', message: f.message.value, context: callContext() };
    if (f.name.value.trim()) frame.name = f.name.value.trim();
    frame[contact.includes('@') ? 'email' : 'phone'] = contact;
    if (fallback && fallback.call_id) frame.call_id = fallback.call_id;
    wantChat = false;
    const go = () => chatSend(frame);
    if (!go()) {
      connectChat();
      chatWs.addEventListener('open', () => setTimeout(go, 50), { once: true });
    }
  });

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

  async function startCall(chatId) {
    if (call) return;
    open();
    offlineForm.hidden = true;
    if (!window.RTCPeerConnection || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      fallback = { fallback: 'no_webrtc' };
      fail('no_webrtc', TEXT.noWebrtc + TEXT.chatInstead);
      return;
    }
    const current = call = { done: false, chatId };
    show('connecting', TEXT.connecting);
    await (configReady = loadConfig()); // fresh: who is online now
    if (call !== current) return;
    if (configProblem) {
      call = null;
      fail(configProblem, TEXT[configProblem]);
      return;
    }
    if (config.operators_online === 0 && !chatId) {
      call = null;
      showOffline(TEXT.nobody);
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
      send(current, { type: 'call.offer', sdp: current.pc.localDescription.sdp, context: callContext(),
        chat_id: current.chatId || null });
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
        if (frame.why === 'nobody_online') {
          endCall(current, frame.reason, TEXT.nobody);
          showOffline(TEXT.nobody);
        } else {
          endCall(current, frame.reason, (TEXT[frame.why] || ENDED[frame.reason] || ENDED.failed), null, frame.why);
        }
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
  const FALLBACKS = {
    microphone_blocked: 'microphone_denied', microphone_failed: 'microphone_failed', ice_failed: 'ice_failed',
    webrtc_failed: 'ice_failed', bad_answer: 'ice_failed', missed: 'no_answer', declined: 'declined', failed: 'failed',
  };

  function endCall(current, reason, text, errorCode, why) {
    if (current.done) return;
    current.done = true;
    const fellBack = why || FALLBACKS[errorCode] || FALLBACKS[reason];
    if (fellBack && !current.connected) {
      fallback = { fallback: fellBack };
      if (current.callId) fallback.call_id = current.callId;
      if (!chatState) text += TEXT.chatInstead;
    }
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
  // A chat open on another page of the shop continues here: the server sends its history.
  try { if (localStorage.getItem(CHAT_KEY)) connectChat(); } catch (e) { /* storage blocked */ }
  document.addEventListener('visibilitychange', markRead);

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
