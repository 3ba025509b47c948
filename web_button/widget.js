/* callserver web button.
 *
 * A shop embeds it with
 *   <script src="https://HOST/widget.js" data-site="KEY" async></script>
 * It renders in an open shadow root (the shop's CSS can't reach it, ours can't leak out), speaks the
 * widget side of docs/signaling.md, and falls back from a call to chat to "leave a message".
 * Page views go out as small beacons (no socket until the shopper acts); operators' invitations
 * arrive on an event stream open only while someone could answer. Plain ES2020, no dependencies,
 * texts from the server: small enough for every page of a shop.
 */
(() => {
  'use strict';

  const queued = window.CallButton;
  // The script was included twice: the first copy serves the page.
  if (queued && typeof queued.visitorToken === 'function') return;

  const script = document.currentScript ||
    document.querySelector('script[data-site][src*="widget.js"]');
  if (!script || !script.dataset.site) {
    console.warn('CallButton: the script tag needs data-site="KEY"');
    return;
  }
  const siteKey = script.dataset.site;
  const base = new URL(script.src, location.href).origin;
  const wsBase = base.replace(/^http/, 'ws');

  // Texts come in the page's language from /widget/config; only this one stays here.
  const FALLBACK = { unreachable: "Can't reach the call service. Please try again later." };
  let T = FALLBACK;
  function t(key, vars) {
    let text = T[key] ?? FALLBACK[key] ?? '';
    for (const name in vars || {}) text = text.split(`{${name}}`).join(vars[name]);
    return text;
  }
  const hidden = () => document.visibilityState === 'hidden';
  const lang = document.documentElement.lang || navigator.language || '';

  // ---- visitor token

  const TOKEN_KEY = 'callbutton.visitor';
  // The visitor token, when localStorage is blocked
  let memoryToken = null;
  const store = (key, value) => { try { localStorage.setItem(key, value); } catch (e) { /* blocked */ } };
  const stored = (key) => { try { return localStorage.getItem(key); } catch (e) { return null; } };

  function visitorToken() {
    const token = stored(TOKEN_KEY) || memoryToken;
    if (token) return token;
    storeToken(newToken());
    return memoryToken;
  }

  function storeToken(token) {
    memoryToken = token;
    store(TOKEN_KEY, token);
  }

  function newToken() {
    if (crypto.randomUUID) return crypto.randomUUID();
    // randomUUID needs a secure context; shops on plain http still get a random token.
    return Array.from(crypto.getRandomValues(new Uint8Array(16)),
      (b) => b.toString(16).padStart(2, '0')).join('');
  }

  // On a Shopify storefront the token rides with the order as a cart attribute (Ajax Cart API), so
  // the order webhook can be attributed; once per token and tab.
  if (window.Shopify && !sessionStorage.getItem('callbutton.cart')) {
    fetch('/cart/update.js', { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ attributes: { callbutton_visitor: visitorToken() } }) })
      .then((res) => res.ok && sessionStorage.setItem('callbutton.cart', '1'), () => {});
  }

  // ---- configuration

  let config = null;
  // null, or why /widget/config failed (an error code)
  let configProblem = null;

  async function loadConfig() {
    try {
      const res = await fetch(`${base}/widget/config?site=${encodeURIComponent(siteKey)}&lang=${encodeURIComponent(lang)}`,
        { credentials: 'omit' });
      let body = null;
      try { body = await res.json(); } catch (e) { /* not JSON */ }
      if (res.ok && body) {
        config = body;
        configProblem = null;
        site = Object.assign({}, site, body.site);
      } else {
        configProblem = { 403: 'origin_not_allowed', 404: 'unknown_site' }[res.status] || 'unreachable';
      }
      if (body && body.texts) localize(body.texts);
      applyStatus();
    } catch (e) {
      configProblem = 'unreachable';
    }
  }

  let site = { name: '', records_calls: false };

  function applySite(info) {
    site = Object.assign({}, site, info);
    const title = site.name ? t('title_site', { site: site.name }) : t('title');
    heading.textContent = title;
    panel.setAttribute('aria-label', title);
    render();
  }

  // ---- where the visitor came from: first and last touch, kept on the shop's own origin

  // A touch is a landing with campaign parameters or from another site; moving between the shop's
  // own pages is not one. Values are cut to what the server takes, so a long one never costs a chat.
  const TOUCH_KEYS = { first: 'callbutton.touch.first', last: 'callbutton.touch.last' };
  const TOUCH_PARAMS = ['utm_source', 'utm_medium', 'utm_campaign', 'utm_term', 'utm_content'];
  const CLICK_IDS = ['gclid', 'gbraid', 'wbraid', 'fbclid', 'msclkid'];
  const CLICK_ID = /^[A-Za-z0-9._~-]{1,200}$/;
  const HOST = /^[A-Za-z0-9.-]{1,253}$/;
  const bareHost = (host) => host.toLowerCase().replace(/^www\./, '');

  function cleanTouch(raw) {
    if (!raw || typeof raw !== 'object') return null;
    const touch = {};
    for (const key of TOUCH_PARAMS.concat(['search'])) {
      const value = typeof raw[key] === 'string' ? raw[key].trim().slice(0, 200) : '';
      if (value) touch[key] = value;
    }
    for (const key of CLICK_IDS) {
      if (typeof raw[key] === 'string' && CLICK_ID.test(raw[key])) touch[key] = raw[key];
    }
    if (typeof raw.referrer === 'string' && HOST.test(raw.referrer)) touch.referrer = raw.referrer;
    if (!Object.keys(touch).length) return null;
    if (Number.isInteger(raw.at) && raw.at >= 0) touch.at = raw.at;
    return touch;
  }

  function landing() {
    const params = new URLSearchParams(location.search);
    const raw = {};
    for (const key of TOUCH_PARAMS.concat(CLICK_IDS)) raw[key] = params.get(key);
    let from = null;
    try { from = document.referrer ? new URL(document.referrer) : null; } catch (e) { /* not a URL */ }
    if (from && from.hostname && bareHost(from.hostname) !== bareHost(location.hostname)) {
      raw.referrer = from.hostname.toLowerCase();
      raw.search = ['q', 'p', 'text', 'query'].map((key) => from.searchParams.get(key)).find(Boolean);
    }
    raw.at = Date.now();
    return cleanTouch(raw);
  }

  function keptTouch(which) {
    try { return cleanTouch(JSON.parse(stored(TOUCH_KEYS[which]) || 'null')); } catch (e) { return null; }
  }

  const touches = { first: keptTouch('first'), last: keptTouch('last') };
  const landed = landing();
  if (landed) {
    if (!touches.first) touches.first = landed;
    touches.last = landed;
    store(TOUCH_KEYS.first, JSON.stringify(touches.first));
    store(TOUCH_KEYS.last, JSON.stringify(touches.last));
  }

  // ---- visitor context

  const CONTEXT_KEYS = { cartValue: 'cart_value', currency: 'currency', productPrice: 'product_price', sku: 'sku' };
  const NUMERIC = new Set(['cart_value', 'product_price']);
  const shopContext = {};
  let visitor = null;

  function setContext(values) {
    const cart = shopContext.cart_value;
    setTimeout(() => { if (shopContext.cart_value !== cart) heartbeat(); });
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

  // Product and price from schema.org JSON-LD, or microdata, when the shop didn't set them.
  function pageProduct() {
    for (const tag of document.querySelectorAll('script[type="application/ld+json"]')) {
      let data;
      try { data = JSON.parse(tag.textContent); } catch (e) { continue; }
      for (const item of [].concat((data && data['@graph']) || data)) {
        if (!item || ![].concat(item['@type']).includes('Product')) continue;
        const offer = [].concat(item.offers || [])[0] || {};
        const found = {};
        const price = offer.price ?? offer.lowPrice;
        if (price != null && price !== '' && isFinite(price)) found.product_price = +price;
        if (offer.priceCurrency) found.currency = String(offer.priceCurrency);
        if (item.sku) found.sku = String(item.sku);
        if (item.name) found.product_name = String(item.name);
        return found;
      }
    }
    return {};
  }

  function microdata() {
    const item = document.querySelector('[itemtype$="schema.org/Product"]');
    if (!item) return {};
    const found = {};
    const prop = (name) => {
      const node = item.querySelector(`[itemprop="${name}"]`);
      return node && (node.getAttribute('content') || node.textContent || '').trim();
    };
    const price = +String(prop('price') || '').replace(',', '.').replace(/[^0-9.]/g, '');
    if (price) found.product_price = price;
    for (const [name, key] of [['priceCurrency', 'currency'], ['sku', 'sku'], ['name', 'product_name']]) {
      if (prop(name)) found[key] = prop(name);
    }
    return found;
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
    try { product = Object.assign(microdata(), pageProduct()); } catch (e) { /* odd markup */ }
    Object.assign(context, product, shopContext);
    if (visitor) context.visitor = visitor;
    if (touches.first || touches.last) context.touch = touches;
    return context;
  }

  // ---- events

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

  // ---- user interface

  // Inputs are 16 px: iOS Safari zooms the page into a focused input under 16 px. The panel keeps
  // inside the dynamic viewport (100dvh; 100vh before browsers had it): a phone's toolbars come and go.
  const CSS = `
[hidden]{display:none !important}
.cb{font:15px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328}
button{font:inherit;cursor:pointer;border:0;border-radius:8px;padding:10px 16px}
button:focus-visible{outline:3px solid #f59e0b;outline-offset:2px}
.launcher{width:60px;height:60px;border-radius:50%;padding:0;display:grid;place-items:center;background:#1d6f42;color:#fff;box-shadow:0 4px 14px rgba(0,0,0,.3)}
.launcher svg{width:28px;height:28px;fill:currentColor}
.launcher.live{background:#b42318}
.launcher.offline{background:#57606a}
.panel,.invite{position:absolute;right:0;bottom:72px;width:300px;box-sizing:border-box;background:#fff;border-radius:12px;padding:16px;box-shadow:0 8px 30px rgba(0,0,0,.25)}
.panel{max-height:calc(100vh - 100px);max-height:calc(100dvh - 100px);overflow-y:auto}
.head{display:flex;align-items:center;justify-content:space-between;gap:8px}
.head h2{font-size:17px;margin:0;font-weight:600}
.close{background:transparent;color:#57606a;font-size:22px;line-height:1;padding:4px 10px}
.status{margin:12px 0 4px;min-height:1.4em}
.timer{margin:0;font-variant-numeric:tabular-nums;font-size:22px}
.note{margin:4px 0 0;font-size:13px;color:#57606a}
.actions{display:flex;flex-wrap:wrap;gap:8px;margin-top:12px}
.call{background:#1d6f42;color:#fff;flex:1}
.hangup{background:#b42318;color:#fff;flex:1}
.mute,.chat{background:#eaeef2;color:#1f2328}
.mute[aria-pressed="true"]{background:#1f2328;color:#fff}
.log{list-style:none;margin:12px 0 0;padding:0;max-height:260px;overflow-y:auto}
.log li{margin:4px 0;padding:6px 10px;border-radius:8px;background:#eaeef2;white-space:pre-wrap;overflow-wrap:anywhere}
.log .visitor{background:#d8f0e0;margin-left:32px}
.log .system{background:none;color:#57606a;font-size:13px;padding:2px 0}
.log .failed{background:#fde2e1}
.log small{display:block;color:#57606a;font-size:12px}
form{display:flex;flex-direction:column;gap:6px;margin-top:8px}
input,textarea{font:inherit;font-size:16px;border:1px solid #8c959f;border-radius:6px;padding:6px 8px}
.say,.mailme{flex-direction:row}
.say textarea,.mailme input{flex:1;min-width:0}
.send{background:#1d6f42;color:#fff}
.typing,.mailme{font-size:13px;color:#57606a;margin:4px 0 0}
.invite .close{position:absolute;top:4px;right:2px}
.invite p{margin:0 24px 6px 0}
.who{font-weight:600}
@media (max-width:479px){.panel{position:fixed;left:0;right:0;bottom:0;width:auto;border-radius:12px 12px 0 0;max-height:100vh;max-height:100dvh}
.invite{position:fixed;left:8px;right:8px;bottom:88px;width:auto}}`;

  const PHONE_ICON = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M6.6 10.8a15.1 15.1 0 0 0 6.6 6.6l2.2-2.2c.3-.3.7-.4 1-.2 1.1.4 2.3.6 3.6.6.6 0 1 .4 1 1V20c0 .6-.4 1-1 1A17 17 0 0 1 3 4c0-.6.4-1 1-1h3.5c.6 0 1 .4 1 1 0 1.3.2 2.5.6 3.6.1.3 0 .7-.2 1z"/></svg>';

  // A tag of our own: shop rules aimed at div or span miss the host too.
  const host = document.createElement('callbutton-widget');
  host.setAttribute('data-callbutton', '');
  // Inline, so no shop rule outranks it; `all: initial` stops inherited styles; fixed: no layout shift.
  host.setAttribute('style', 'all:initial;position:fixed;bottom:20px;right:20px;z-index:2147483000;');
  const root = host.attachShadow({ mode: 'open' });
  // Static markup: texts come with localize(), the network's strings go in as textContent.
  root.innerHTML = `<style>${CSS}</style>
<div class="cb">
<div class="panel" role="dialog" hidden>
<div class="head">
<h2></h2>
<button class="close" type="button" data-testid="cb-close" data-a="close">×</button>
</div>
<p class="status" data-testid="cb-status" aria-live="polite"></p>
<p class="timer" role="timer" data-a="timer_aria" hidden>00:00</p>
<p class="note" data-t="recorded" hidden></p>
<div class="actions">
<button class="call" type="button" data-testid="cb-call" data-a="call_aria"></button>
<button class="mute" type="button" data-testid="cb-mute" aria-pressed="false" hidden></button>
<button class="hangup" type="button" data-testid="cb-hangup" data-a="hangup_aria" hidden></button>
<button class="chat" type="button" data-testid="cb-chat-open" data-a="chat_aria" data-t="chat" hidden></button>
</div>
<div class="chatbox" hidden>
<ol class="log" data-testid="cb-chat-log" data-a="log_aria" aria-live="polite"></ol>
<p class="typing" hidden></p>
<form class="say">
<textarea data-testid="cb-chat-input" rows="2" maxlength="4000" data-a="message_aria" data-p="message_ph"></textarea>
<button class="send" type="submit" data-testid="cb-chat-send" data-t="send"></button>
</form>
<form class="mailme">
<input type="email" name="email" data-a="transcript_aria" data-p="transcript_ph">
<button type="submit" data-t="send"></button>
</form>
</div>
<form class="offline" data-testid="cb-offline-form" hidden>
<input name="name" maxlength="200" data-a="name_ph" data-p="name_ph">
<input name="email" maxlength="320" required data-a="contact_ph" data-p="contact_ph">
<textarea name="message" rows="3" maxlength="4000" required data-a="text_ph" data-p="text_ph"></textarea>
<button class="send" type="submit" data-testid="cb-offline-send" data-t="send_message"></button>
</form>
<audio autoplay></audio>
</div>
<div class="invite" data-testid="cb-invite" role="dialog" aria-live="polite" aria-labelledby="cb-who" hidden>
<button class="close" type="button" data-testid="cb-invite-close" data-a="invite_close">×</button>
<p class="who" id="cb-who"></p>
<p class="greet"></p>
<div class="actions">
<button class="call" type="button" data-testid="cb-invite-call" data-t="invite_call"></button>
<button class="chat" type="button" data-testid="cb-invite-chat" data-t="invite_chat"></button>
</div>
</div>
<button class="launcher" type="button" data-testid="cb-launcher" aria-label="Call us"
data-a="launcher" aria-expanded="false">${PHONE_ICON}</button>
</div>`;

  function localize(texts) {
    T = texts;
    if (view === 'idle') statusText = closed() ? config.closed_text : t('idle');
    for (const node of root.querySelectorAll('[data-t]')) node.textContent = t(node.dataset.t);
    for (const node of root.querySelectorAll('[data-a]')) node.setAttribute('aria-label', t(node.dataset.a));
    for (const node of root.querySelectorAll('[data-p]')) node.placeholder = t(node.dataset.p);
    applySite();
  }

  const $ = (selector) => root.querySelector(selector);
  const panel = $('.panel');
  const heading = $('.head h2');
  const statusLine = $('.status');
  const timerLine = $('.timer');
  const note = $('.note');
  const callButton = $('.call');
  const muteButton = $('.mute');
  const chatButton = $('.chat');
  const hangupButton = $('.hangup');
  const launcher = $('.launcher');
  const remoteAudio = $('audio');
  // iOS Safari plays a remote stream only with play() on its track and again once it can play.
  const play = () => remoteAudio.play().catch(() => { /* autoplay: the click counted */ });
  remoteAudio.addEventListener('canplay', play);
  const chatBox = $('.chatbox');
  const chatLog = $('.log');
  const typingLine = $('.typing');
  const sayForm = $('.say');
  const chatInput = $('.say textarea');
  const offlineForm = $('.offline');

  const inviteBox = $('.invite');

  // view: 'idle' | 'mic' | 'connecting' | 'waiting' | 'incall' | 'ended'
  let view = 'idle';
  let statusText = t('idle');

  function show(nextView, text) {
    view = nextView;
    statusText = text;
    render();
  }

  function render() {
    const live = ['mic', 'connecting', 'waiting', 'incall'].includes(view);
    const hadFocus = root.activeElement;
    let text = statusText;
    if (view === 'waiting' && site.records_calls) text = `${t('waiting')} ${t('recorded')}`;
    statusLine.textContent = text;
    note.hidden = !(site.records_calls && ['idle', 'mic', 'connecting'].includes(view));
    callButton.hidden = live;
    callButton.textContent = t(view === 'ended' ? 'call_again' : 'call');
    hangupButton.hidden = !live;
    hangupButton.textContent = t(view === 'incall' ? 'hangup' : 'cancel');
    muteButton.hidden = !(view === 'waiting' || view === 'incall');
    const muted = muteButton.getAttribute('aria-pressed') === 'true';
    muteButton.textContent = t(muted ? 'unmute' : 'mute');
    muteButton.setAttribute('aria-label', t(muted ? 'unmute_aria' : 'mute_aria'));
    chatButton.hidden = !(config && config.chat) || live || (!chatBox.hidden && chatState !== null) || !offlineForm.hidden;
    if (offline() && !live && !call) callButton.hidden = true;
    timerLine.hidden = view !== 'incall';
    launcher.classList.toggle('live', live);
    // A button that just hid would drop keyboard focus (and Escape) out of the panel.
    if (hadFocus && hadFocus.hidden && !panel.hidden) (live ? hangupButton : callButton).focus();
  }

  const closed = () => Boolean(config && config.open === false);
  const closedText = () => (config && config.closed_text) || t('closed_plain');
  // Nobody can answer: outside working hours, or no operator online (kept live by site.status).
  const offline = () => closed() || Boolean(config && config.operators_online === 0);
  const offText = () => (closed() ? closedText() : t('nobody'));
  const typed = () => Array.from(offlineForm.elements).some((field) => field.value.trim());
  let wasOffline = null;

  // Whether someone can answer changed (config, hello, site.status): the launcher says so, an open
  // panel turns to the form or back to calling — never in the middle of a call or a chat, and the
  // form the shopper is typing in stays.
  function applyStatus() {
    const off = offline();
    const quiet = call || chatState;
    launcher.classList.toggle('offline', off && !quiet);
    launcher.dataset.state = off && !quiet ? 'offline' : 'online';
    launcher.setAttribute('aria-label', t(off && !quiet ? 'launcher_offline' : 'launcher'));
    const changed = off !== wasOffline;
    wasOffline = off;
    if (!changed || panel.hidden || quiet) render();
    else if (off) formView(offText());
    else { offlineForm.hidden = offlineForm.hidden || !typed(); show('idle', t('idle')); }
  }

  function formView(text) {
    chatBox.hidden = true;
    offlineForm.hidden = false;
    show('ended', text);
    afterwards((after) => after.offline());
  }

  function open() {
    if (!host.isConnected) mount();
    hideInvite();
    if (!panel.hidden) return;
    if (!call && !chatState) {
      if (offline()) { if (offlineForm.hidden) formView(offText()); }
      else if (!offlineForm.hidden && !typed()) { offlineForm.hidden = true; show('idle', t('idle')); }
    }
    panel.hidden = false;
    launcher.setAttribute('aria-expanded', 'true');
    (offlineForm.hidden ? (callButton.hidden ? hangupButton : callButton) : offlineForm.elements.message).focus();
    // Who can answer, live, while the panel is open
    socket.connect();
    emit('open', {});
    if (chatState) markRead();
  }

  function close() {
    if (panel.hidden) return;
    const focusInside = panel.contains(root.activeElement);
    panel.hidden = true;
    launcher.setAttribute('aria-expanded', 'false');
    // Keep keyboard users where they were
    if (focusInside) launcher.focus();
    emit('close', {});
  }

  // ---- the socket: one per page, for the chat and the call ------------------------------------

  // Opened when the shopper acts (panel, chat, call; page views are beacons). One per page keeps a
  // household of tabs under the server's sockets-per-address cap. It comes back by itself after a
  // drop while `wanted()`, with backoff and jitter so that a restarted server isn't hit by every shop
  // page at once (a call it carried has ended on the server: connection_lost). Takers are asked in
  // the order they came, and what none of them takes goes to `rest`.
  function widgetSocket(rest, wanted) {
    let ws = null;
    // hello came: what waits may go
    let ready = false;
    let retries = 0;
    let retryTimer = null;
    let ping = null;
    const takers = new Set();
    const waiting = [];

    function hear(frame) {
      try {
        for (const fn of Array.from(takers)) if (fn(frame)) return;
        rest(frame);
      } catch (e) { console.error(e); }
    }

    function connect() {
      clearTimeout(retryTimer);
      if (ws) return;
      try {
        ws = new WebSocket(`${wsBase}/ws/widget?site=${encodeURIComponent(siteKey)}&visitor=${encodeURIComponent(visitorToken())}`);
      } catch (e) {
        hear({ type: 'socket.closed', code: 1006 });
        return;
      }
      // Idle proxies cut quiet sockets; the server answers pong.
      ws.onopen = () => { ping = setInterval(() => send({ type: 'ping' }), 25000); };
      ws.onmessage = (event) => {
        let frame;
        try { frame = JSON.parse(event.data); } catch (e) { return; }
        if (!frame) return;
        if (frame.type === 'hello') { ready = true; retries = 0; }
        hear(frame);
        if (ready) for (const fn of waiting.splice(0)) fn();
      };
      ws.onclose = (event) => {
        ws = null;
        ready = false;
        clearInterval(ping);
        // Not a frame of the server's: no taker keeps it from the others.
        hear({ type: 'socket.closed', code: event.code });
        // 4xxx: refused (origin, site, too many), and asking again gets the same answer.
        // A call waits for us on the server (call.resume): the first try comes at once.
        if ((wanted() || call) && event.code < 4000) {
          retryTimer = setTimeout(connect, call && !retries ? 300 * (1 + Math.random()) : Math.min(16000, 2000 * 2 ** retries) * (0.5 + Math.random()));
          retries++;
        }
      };
    }

    function send(frame) {
      if (!ws || ws.readyState !== WebSocket.OPEN) return false;
      ws.send(JSON.stringify(frame));
      return true;
    }

    return {
      connect,
      send,
      // fn now if the socket is ready, else at the next hello (after a reconnect too).
      whenReady(fn) { if (ready) fn(); else { waiting.push(fn); connect(); } },
      // fn(frame) is true when it took the frame; returns the function that unregisters it.
      onFrame(fn) { takers.add(fn); return () => takers.delete(fn); },
      // Let go at once: a socket left on an address the page no longer has stays open without
      // carrying anything (no close comes for minutes); a call comes back on a new one.
      close() {
        const old = ws;
        if (old) { old.onclose({ code: 1006 }); old.onmessage = old.onclose = null; old.close(); }
      },
    };
  }

  // A network blip must not end the conversation: come back while a chat is open or the panel shows.
  const socket = widgetSocket(chatFrame, () => Boolean(chatState && chatState.state !== 'closed') || !panel.hidden);

  // ---- chat and leave-a-message ---------------------------------------------------------------

  const CHAT_KEY = 'callbutton.chat';
  // The chat: { id, state, position, operator }
  let chatState = null;
  // chat.start goes out once the socket says hello
  let wantChat = false;
  // Why the last call failed: { fallback, call_id }
  let fallback = null;
  let clientIds = 0;
  let restoreTimer = null;
  // Message id (or client id) → list item
  const shown = new Map();

  function remember(on) {
    store(CHAT_KEY, on ? '1' : '');
  }

  // The chat's extras (the operator's preview of what is typed, their offer of a call, the transcript
  // by mail) are in widget-after.js, loaded when the chat shows.
  function showChat() {
    open();
    offlineForm.hidden = true;
    chatBox.hidden = false;
    render();
    afterwards();
  }

  function chat() {
    if (offline() && !chatState) { showOffline(offText()); return; }
    showChat();
    wantChat = true;
    socket.whenReady(startChat);
    chatInput.focus();
  }

  function startChat() {
    // Asked twice while connecting, or the shopper left a message instead
    if (!wantChat) return;
    wantChat = false;
    socket.send(Object.assign({ type: 'chat.start', context: callContext() }, fallback || {}));
  }

  // The page's frames (hello, site.status), the chat's and the offline form's.
  function chatFrame(frame) {
    switch (frame.type) {
      case 'hello':
        if (frame.visitor_token) storeToken(String(frame.visitor_token));
        applySite(frame.site);
        // No chat to continue: a socket opened for it alone goes (not under an open panel or a call).
        if (!wantChat) restoreTimer = setTimeout(() => { if (!chatState) { remember(false); if (panel.hidden && !call) socket.close(); } }, 3000);
        siteStatus(frame);
        break;
      case 'site.status':
        siteStatus(frame);
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
      case 'message.left':
        offlineForm.hidden = true;
        show('ended', t('left'));
        break;
      case 'error':
        // A hang-up that crossed the server's call.ended: the call is over either way.
        if (frame.code === 'no_call') break;
        if (frame.code === 'nobody_online' || frame.code === 'closed') {
          showOffline(frame.code === 'closed' ? closedText() : t('nobody'));
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
        if (/^(csat|callback|visitor_call|chat)\./.test(frame.type)) afterwards((after) => after.frame(frame));
    }
  }

  // ---- after a conversation: web_button/widget-after.js, loaded the first time it is needed

  // The survey, the call-back form and an operator's incoming call live in a second file, so that a
  // page only loads it when one of them shows. It hands its setup to window.__callbuttonAfter, which
  // gets what it needs from here; what setup returns takes the frames and the offline form's moments.
  let after = null;
  function afterwards(fn) {
    after = after || new Promise((resolve, reject) => {
      window.__callbuttonAfter = (setup) => resolve(setup({ root, panel, offlineForm, t, el, socket, open, startCall,
        show, on, emit, store, stored, visitorToken, base, siteKey, config: () => config, peer, offer,
        view: () => view, call: () => call, chat: () => chatState, addLine, lost, giveUpAfter }));
      const tag = document.createElement('script');
      tag.src = `${base}/widget-after.js`;
      tag.onerror = () => { after = null; reject(); };
      document.head.append(tag);
    });
    after.then(fn, () => { /* not reachable: the next moment tries again */ });
  }

  function siteStatus(frame) {
    if (!config || typeof frame.operators_online !== 'number') return;
    // Someone came online: report the page now, so that the stream opens and they can ring it.
    if (frame.operators_online > config.operators_online && !stream) heartbeat();
    config.operators_online = frame.operators_online;
    if (typeof frame.open === 'boolean') config.open = frame.open;
    applyStatus();
  }

  function setChat(info) {
    if (!info) return;
    chatState = info;
    remember(info.state !== 'closed');
    const name = info.operator && info.operator.name;
    // The call's own status wins while a call is on.
    if (!call) {
      statusText = info.state === 'closed' ? t('chat_ended')
        : name ? t('chatting', { name }) : t('queue', { n: info.position || 1 });
    }
    sayForm.hidden = info.state === 'closed';
    if (info.state === 'closed') chatState = null;
    render();
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    node.className = className;
    if (text) node.textContent = text;
    return node;
  }

  function addLine(item) {
    chatLog.append(item);
    chatLog.scrollTop = chatLog.scrollHeight;
  }

  function showMessage(message) {
    if (!message || shown.has(message.id)) return;
    const item = el('li', String(message.sender));
    if (message.sender === 'operator' && message.operator) item.append(el('small', '', String(message.operator.name)));
    item.append(String(message.text));
    shown.set(message.id, item);
    if (message.sender === 'visitor') setTick(item, message.status);
    addLine(item);
  }

  function setTick(item, status) {
    if (!item || item.className.indexOf('visitor') < 0) return;
    let tick = item.querySelector('.tick');
    if (!tick) item.append(tick = el('small', 'tick'));
    if (tick.dataset.status === 'read') return;
    tick.dataset.status = status;
    tick.textContent = t(status === 'read' || status === 'delivered' ? status : 'sent');
  }

  function typing(on) {
    clearTimeout(typing.timer);
    const name = chatState && chatState.operator && chatState.operator.name;
    typingLine.textContent = t('typing', { name: name || t('operator') });
    typingLine.hidden = !on;
    if (on) typing.timer = setTimeout(() => { typingLine.hidden = true; }, 6000);
  }

  function markRead() {
    if (panel.hidden || hidden()) return;
    const ids = Array.from(shown.keys()).filter((id) => typeof id === 'number');
    if (ids.length) socket.send({ type: 'chat.read', up_to: Math.max(...ids) });
  }

  chatInput.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey) { event.preventDefault(); sayForm.requestSubmit(); }
  });
  sayForm.addEventListener('submit', () => {
    const text = chatInput.value.trim();
    if (!text) return;
    const id = String(++clientIds);
    if (!socket.send({ type: 'chat.send', text, client_id: id })) {
      statusLine.textContent = t('unreachable');
      return;
    }
    chatInput.value = '';
    const item = el('li', 'visitor', text);
    item.style.opacity = '.6';
    shown.set(`c${id}`, item);
    addLine(item);
  });

  function showOffline(reason) {
    open();
    formView(reason);
    offlineForm.elements.message.focus();
  }

  offlineForm.addEventListener('submit', () => {
    const f = offlineForm.elements;
    const contact = f.email.value.trim();
    const frame = { type: 'message.leave', message: f.message.value, context: callContext() };
    if (f.name.value.trim()) frame.name = f.name.value.trim();
    frame[contact.includes('@') ? 'email' : 'phone'] = contact;
    if (fallback && fallback.call_id) frame.call_id = fallback.call_id;
    wantChat = false;
    socket.whenReady(() => socket.send(frame));
  });

  // No form of ours ever submits the shop's page, even before widget-after.js takes its own.
  root.addEventListener('submit', (event) => event.preventDefault());
  launcher.addEventListener('click', () => (panel.hidden ? open() : close()));
  $('.close').addEventListener('click', close);
  callButton.addEventListener('click', () => startCall());
  hangupButton.addEventListener('click', hangup);
  muteButton.addEventListener('click', toggleMute);
  chatButton.addEventListener('click', () => chat());
  root.addEventListener('keydown', (event) => {
    if (event.key !== 'Escape') return;
    if (!inviteBox.hidden) declineInvite();
    else if (!panel.hidden) close();
  });

  // ---- the call

  // The call: { pc, stream, callId, offered, connected, stop, ... }
  let call = null;

  function fail(code, message) {
    show('ended', message);
    emit('error', { code, message });
  }

  // invitation: the operator's ring of this page that the shopper answers (widget-after.js)
  async function startCall(chatId, invitation) {
    if (call) return;
    open();
    offlineForm.hidden = true;
    if (!window.RTCPeerConnection || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      fallback = { fallback: 'no_webrtc' };
      fail('no_webrtc', t('noWebrtc') + t('chatInstead'));
      return;
    }
    const current = call = { done: false, chatId, invitation };
    show('connecting', t('connecting'));
    // Fresh: who is online now
    await (configReady = loadConfig());
    if (call !== current) return;
    if (configProblem) {
      call = null;
      fail(configProblem, t(configProblem));
      return;
    }
    if (closed() || (config.operators_online === 0 && !chatId)) {
      call = null;
      showOffline(closed() ? closedText() : t('nobody'));
      return;
    }
    emit('call.started', {});
    show('mic', t('mic'));
    try {
      current.stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (e) {
      const blocked = e && ['NotAllowedError', 'NotFoundError', 'SecurityError'].includes(e.name);
      endCall(current, 'failed', t(blocked ? 'micBlocked' : 'micBroken'), blocked ? 'microphone_denied' : 'microphone_failed');
      return;
    }
    // Cancelled while the browser asked
    if (current.done) {
      current.stream.getTracks().forEach((track) => track.stop());
      return;
    }
    // Its level meter and device picker (widget-after.js)
    afterwards((a) => a.mic(current));
    show('connecting', t('connecting'));
    try {
      await offer(current.pc = peer(current));
    } catch (e) {
      endCall(current, 'failed', t('iceFailed'), 'webrtc_failed');
      return;
    }
    if (current.done) return;
    current.stop = socket.onFrame((frame) => callFrame(current, frame));
    socket.whenReady(() => {
      if (current.done) return;
      current.offered = true;
      socket.send({ type: 'call.offer', sdp: current.pc.localDescription.sdp, context: callContext(),
        chat_id: current.chatId || null, invitation: current.invitation });
    });
  }

  // A peer connection for the call, with its microphone. Media lost (ICE disconnected for 2 s, failed)
  // once it had flowed: a new one is offered (reoffer); before that, the call could not connect.
  function peer(current) {
    const pc = new RTCPeerConnection({ iceServers: config.ice_servers || [],
      iceTransportPolicy: config.ice_transport_policy === 'relay' ? 'relay' : 'all' });
    pc.addEventListener('track', (event) => {
      remoteAudio.srcObject = event.streams[0] || new MediaStream([event.track]);
      play();
    });
    const watch = () => {
      if (pc !== current.pc || current.done) return;
      const state = pc.iceConnectionState;
      clearTimeout(current.iceTimer);
      if (state === 'connected' || state === 'completed') {
        if (current.flowed) back(current);
        current.flowed = true;
      } else if (state === 'disconnected') current.iceTimer = setTimeout(() => reoffer(current), 2000);
      else if (state === 'failed' || pc.connectionState === 'failed') {
        if (current.flowed) reoffer(current);
        else {
          send(current, { type: 'call.hangup' });
          endCall(current, 'failed', t('iceFailed'), 'ice_failed');
        }
      }
    };
    pc.addEventListener('connectionstatechange', watch);
    pc.addEventListener('iceconnectionstatechange', watch);
    for (const track of current.stream.getAudioTracks()) pc.addTrack(track, current.stream);
    return pc;
  }

  // The server answers once with all its candidates and takes none later, so send ours in the offer.
  async function offer(pc) {
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      const check = () => { if (pc.iceGatheringState === 'complete') resolve(); };
      setTimeout(resolve, 2000);
      pc.addEventListener('icegatheringstatechange', check);
      check();
    });
  }

  // Media lost, or a new network: a new peer connection offers our leg again (widget-after.js, loaded
  // with the call's microphone check, as is the online/connection watch).
  const reoffer = (current) => afterwards((a) => a.reoffer(current));

  // Only a call the server knows of is told anything (else it would answer no_call).
  function send(current, frame) {
    if (current.offered) socket.send(frame);
  }

  // The call's frames, and the error that refuses its offer; the rest is the chat's. A call ended
  // here (hang-up, ICE) before the server knew goes on taking what the server still sends for it —
  // its answer, its call.ended — so that none of it reaches the next call.
  function callFrame(current, frame) {
    const mine = frame.call_id !== undefined && frame.call_id === current.callId;
    if (current.done) {
      if (frame.type === 'call.answer' && !current.callId) { current.callId = frame.call_id; return true; }
      const last = frame.type === 'socket.closed' || (frame.type === 'call.ended' && mine) ||
        (frame.type === 'error' && !current.callId && !frame.client_id);
      if (last) current.stop();
      return frame.type !== 'socket.closed' && (mine || last);
    }
    let took = true;
    switch (frame.type) {
      case 'socket.closed': {
        took = false;
        const problem = { 4403: 'origin_not_allowed', 4404: 'unknown_site' }[frame.code] || (!current.offered && 'unreachable');
        if (problem) endCall(current, 'failed', t(problem), problem);
        else if (current.token && frame.code < 4000) {
          // The server holds the call for resume_window: our socket comes back and resumes it. A
          // reoffer sent on this one has no answer coming, and the server may have taken it in place
          // of our leg: both go, and the resumed call offers again.
          if (current.next) { current.next.close(); current.pc.close(); }
          current.next = null;
          if (!current.away) current.away = setTimeout(() => lost(current), giveUpAfter());
          show(view, t('reconnecting'));
        } else lost(current);
        break;
      }
      case 'hello':
        took = false;
        if (current.away) socket.send({ type: 'call.resume', call_id: current.callId, resume_token: current.token });
        break;
      case 'call.resumed':
        clearTimeout(current.away);
        current.away = 0;
        if (frame.state === 'answered' && !current.connected) connected(current, frame.operator);
        else back(current);
        if (!['connected', 'completed'].includes(current.pc.iceConnectionState)) reoffer(current);
        break;
      case 'call.reanswer':
        afterwards((a) => a.reanswer(current, frame.sdp));
        break;
      case 'call.reconnecting':
        show(view, t('reconnecting'));
        break;
      case 'call.reconnected':
        back(current);
        break;
      case 'call.answer':
        current.callId = frame.call_id;
        current.token = frame.resume_token;
        current.pc.setRemoteDescription({ type: 'answer', sdp: frame.sdp }).catch(() => {
          send(current, { type: 'call.hangup' });
          endCall(current, 'failed', t('iceFailed'), 'bad_answer');
        });
        if (!current.connected) show('waiting', t('waiting'));
        break;
      case 'call.ringing':
        current.callId = frame.call_id;
        if (!current.connected) show('waiting', t('waiting'));
        break;
      case 'call.connected':
        connected(current, frame.operator);
        break;
      case 'call.ended':
        if (frame.why === 'nobody_online') {
          endCall(current, frame.reason, t('nobody'));
          showOffline(t('nobody'));
        } else {
          endCall(current, frame.reason, (T[frame.why] || t(`ended_${frame.reason}`) || t('ended_failed')), null, frame.why);
        }
        break;
      case 'error':
        // A resume refused (bad_resume_token, no_call): the call is gone for us.
        if (current.away && !frame.client_id) { lost(current); break; }
        if (!current.offered || current.callId || frame.client_id) return false;
        if (frame.code === 'closed') {
          endCall(current, 'failed', closedText());
          showOffline(closedText());
        } else {
          endCall(current, 'failed', String(frame.message || t('error')), String(frame.code || 'error'));
        }
        break;
      default: // pong, and frames a newer server may add
        took = false;
    }
    // The server is done with this call too: its end, its refusal, or the socket went.
    if (current.done && ['socket.closed', 'call.ended', 'error'].includes(frame.type)) current.stop();
    return took;
  }

  function connected(current, operator) {
    const name = current.name = (operator && operator.name) || t('our_team');
    current.connected = true;
    const startedAt = Date.now();
    const tick = () => { timerLine.textContent = duration(Date.now() - startedAt); };
    tick();
    current.timer = setInterval(tick, 1000);
    show('incall', t('in_call', { name }));
    emit('call.connected', { operator: { name } });
  }

  // Back from Reconnecting…: the call's own line again.
  function back(current) {
    if (!current.away) show(view, current.connected ? t('in_call', { name: current.name }) : t('waiting'));
  }

  // How long a call away from the server is waited for: its resume_window (from /widget/config; 30 s
  // from an older server), and 5 s more so that we give up after it would have.
  function giveUpAfter() {
    return 1e3 * (config.resume_window || 30) + 5e3;
  }

  function lost(current) {
    endCall(current, 'dropped', t('ended_dropped'), 'connection_lost');
  }

  function duration(ms) {
    const seconds = Math.floor(ms / 1000);
    return `${String(Math.floor(seconds / 60)).padStart(2, '0')}:${String(seconds % 60).padStart(2, '0')}`;
  }

  // Releases everything the call holds, once, whichever way it ended.
  const FALLBACKS = {
    microphone_denied: 'microphone_denied', microphone_failed: 'microphone_failed', ice_failed: 'ice_failed',
    webrtc_failed: 'ice_failed', bad_answer: 'ice_failed', missed: 'no_answer', declined: 'declined', failed: 'failed',
    all_busy: 'all_busy',
  };

  function endCall(current, reason, text, errorCode, why) {
    if (current.done) return;
    current.done = true;
    const fellBack = why || FALLBACKS[errorCode] || FALLBACKS[reason];
    if (fellBack && !current.connected) {
      fallback = { fallback: fellBack };
      if (current.callId) fallback.call_id = current.callId;
      if (!chatState) text += t('chatInstead');
      // Nobody took it: offer a call back too (widget-after.js)
      if (['no_answer', 'all_busy', 'declined'].includes(fellBack)) afterwards((a) => a.missed());
    }
    if (call === current) call = null;
    clearInterval(current.timer);
    clearTimeout(current.away);
    clearTimeout(current.iceTimer);
    if (current.next) current.next.close();
    // The socket stays, for the chat and the next call; a call the server never heard of has
    // nothing more to come on it.
    if (current.stop && !current.offered) current.stop();
    if (current.pc) current.pc.close();
    if (current.stream) current.stream.getTracks().forEach((track) => track.stop());
    remoteAudio.srcObject = null;
    muteButton.setAttribute('aria-pressed', 'false');
    show('ended', text);
    if (errorCode) emit('error', { code: errorCode, message: text });
    emit('call.ended', { reason });
  }

  function hangup() {
    const current = call;
    if (!current) return;
    send(current, { type: 'call.hangup' });
    const reason = current.connected ? 'completed' : 'abandoned';
    endCall(current, reason, t(`ended_${reason}`));
  }

  function toggleMute() {
    if (!call || !call.stream) return;
    const muted = muteButton.getAttribute('aria-pressed') !== 'true';
    call.stream.getAudioTracks().forEach((track) => { track.enabled = !muted; });
    muteButton.setAttribute('aria-pressed', String(muted));
    render();
  }

  // ---- the visit: page-view beacons and invitations --------------------------------------------

  const NO_INVITE = 'callbutton.noinvite';
  const LAST = 'callbutton.last';
  const viewId = newToken().replace(/-/g, '').slice(0, 24);
  let visibleMs = 0;
  let visibleSince = hidden() ? 0 : Date.now();
  let stream = null;
  const declined = () => stored(NO_INVITE) === '1';

  // Returning: back after 30 minutes or more away.
  const last = Number(stored(LAST));
  const returning = Boolean(stored('callbutton.returning') || (last && Date.now() - last > 1800e3));
  if (returning) store('callbutton.returning', '1');

  function onPage() {
    return Math.round((visibleMs + (visibleSince ? Date.now() - visibleSince : 0)) / 1000);
  }

  // JSON as text/plain: a "simple" request, without a CORS preflight.
  function beacon(kind, extra, unloading) {
    store(LAST, String(Date.now()));
    const url = `${base}/widget/beacon?site=${encodeURIComponent(siteKey)}`;
    const body = JSON.stringify(Object.assign({}, extra, { kind, visitor: visitorToken(), view: viewId, seconds: onPage() }));
    if (unloading && navigator.sendBeacon && navigator.sendBeacon(url, body)) return;
    fetch(url, { method: 'POST', body, keepalive: true, credentials: 'omit' }).then((res) => {
      const listen = res.headers.get('CB-Listen');
      if (listen === 'again') reportView();
      else if (listen === '1') openStream();
      else closeStream();
    }, () => { /* offline: the next heartbeat retries */ });
  }

  function reportView() {
    const context = callContext();
    delete context.visitor;
    // Conversations carry it; page views have their own referrer and UTM
    delete context.touch;
    beacon('view', Object.assign(context, { returning, dismissed: declined() }));
  }

  function heartbeat() {
    if (!hidden()) beacon('ping', { cart_value: shopContext.cart_value });
  }

  // Invitations: an event stream, open only while the server says someone could answer.
  function openStream() {
    if (stream || declined() || hidden() || !window.EventSource) return;
    stream = new EventSource(`${base}/widget/events?site=${encodeURIComponent(siteKey)}&visitor=${encodeURIComponent(visitorToken())}`);
    stream.addEventListener('invite', (event) => {
      try { showInvite(JSON.parse(event.data)); } catch (e) { /* malformed */ }
    });
    stream.addEventListener('bye', closeStream);
    // An operator rings this page: the incoming-call card is in widget-after.js
    for (const type of ['visitor_call.ring', 'visitor_call.over']) {
      stream.addEventListener(type, (event) => {
        try { const frame = Object.assign(JSON.parse(event.data), { type }); afterwards((a) => a.frame(frame)); } catch (e) { /* malformed */ }
      });
    }
    // No reconnects: the next heartbeat decides
    stream.onerror = closeStream;
  }

  function closeStream() {
    if (stream) stream.close();
    stream = null;
  }

  function showInvite(invitation) {
    if (declined() || call || chatState || !panel.hidden || closed()) return;
    const name = String((invitation.operator && invitation.operator.name) || t('our_team'));
    $('.who').textContent = t('invite_title', { name, site: site.name || String(invitation.site || '') });
    $('.greet').textContent = String(invitation.text || t('greeting'));
    inviteBox.hidden = false;
    emit('invite', { operator: { name } });
  }

  function hideInvite() {
    inviteBox.hidden = true;
  }

  function declineInvite() {
    const focusInside = inviteBox.contains(root.activeElement);
    hideInvite();
    store(NO_INVITE, '1');
    closeStream();
    beacon('dismiss', {});
    if (focusInside) launcher.focus();
  }

  inviteBox.querySelector('.call').addEventListener('click', () => { hideInvite(); startCall(); });
  inviteBox.querySelector('.chat').addEventListener('click', () => { hideInvite(); chat(); });
  inviteBox.querySelector('.close').addEventListener('click', declineInvite);

  document.addEventListener('visibilitychange', () => {
    if (hidden()) {
      visibleMs += visibleSince ? Date.now() - visibleSince : 0;
      visibleSince = 0;
      closeStream();
    } else {
      visibleSince = Date.now();
      heartbeat();
      markRead();
    }
  });
  addEventListener('pagehide', () => beacon('leave', {}, true));
  setInterval(heartbeat, 20000);

  // ---- start

  function mount() {
    if (!host.isConnected && document.body) document.body.appendChild(host);
  }

  render();
  let configReady = loadConfig();
  if (document.body) mount();
  else document.addEventListener('DOMContentLoaded', mount);
  // After queued setContext calls, and once the body's microdata is parsed.
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', reportView);
  else setTimeout(reportView);
  // A chat open on another page continues here: the server sends its history.
  if (stored(CHAT_KEY)) socket.connect();

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

  // Calls queued before the script loaded: CallButton = CallButton || []; CallButton.push([...]).
  if (Array.isArray(queued)) {
    for (const item of queued) {
      const [method, ...args] = [].concat(item);
      if (typeof api[method] === 'function') {
        try { api[method](...args); } catch (e) { console.error(e); }
      }
    }
  }
})();
