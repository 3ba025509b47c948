/* callserver web button, part two: what comes after a conversation, and what only a call or a chat needs.
 *
 * widget.js loads this file the first time one of these is needed — the "how was it?" card after a
 * call or chat, the call-back form beside the offline form, an operator's incoming call, the
 * microphone's check once a call has it, the call's recovery when its media goes, the chat's extras
 * once a chat shows — so that every other page view of a shop loads widget.js alone. It registers
 * through window.__callbuttonAfter and
 * gets from widget.js what it shares: the shadow root, the panel, t(), el(), the page's one socket
 * (send, whenReady, onFrame), open(), on(). Frames are in docs/signaling.md ("After a conversation").
 */
(() => {
  'use strict';

  const register = window.__callbuttonAfter;
  if (typeof register !== 'function') return;

  const CSS = `
.csat{margin-top:12px;padding-top:10px;border-top:1px solid #d0d7de;position:relative}
.csat p{margin:0 28px 6px 0}
.csat .close{position:absolute;top:4px;right:-6px}
.scores{display:flex;gap:6px}
.scores button{flex:1;padding:8px 0;background:#eaeef2;color:#1f2328}
.scores button[aria-pressed="true"]{background:#1d6f42;color:#fff}
.callback{margin-top:12px;padding-top:10px;border-top:1px solid #d0d7de}
.callback p,.incoming p{margin:0 0 6px}
.incoming{margin-top:12px;padding:10px;border-radius:8px;background:#d8f0e0}
.mic{margin-top:8px;display:flex;align-items:center;gap:8px;flex-wrap:wrap}
.level{flex:1;min-width:80px;height:6px;border-radius:3px;background:#eaeef2;overflow:hidden}
.level i{display:block;height:100%;width:0;background:#1d6f42;transition:width .1s}
.mic p{margin:0;flex-basis:100%;color:#b42318;font-size:13px}
.mic select{font:inherit;font-size:16px;max-width:100%;border:1px solid #8c959f;border-radius:6px}`;

  // ---- call me back: beside the offline form, when the site offers it

  function callBack(api, frames, offlineShown, missedShown) {
    const { offlineForm, t, el, socket, config, on } = api;
    let form = null;
    on('call.started', () => { if (form) form.hidden = true; });

    function showForm() {
      const settings = config();
      if (form || (settings && settings.callback === false)) return;
      form = el('form', 'callback');
      form.dataset.testid = 'cb-callback';
      const phone = el('input', '');
      phone.name = 'phone';
      phone.type = 'tel';
      phone.required = true;
      phone.maxLength = 30;
      phone.autocomplete = 'tel';
      phone.placeholder = t('callback_phone');
      phone.setAttribute('aria-label', t('callback_phone'));
      const when = el('input', '');
      when.name = 'when';
      when.maxLength = 200;
      when.placeholder = t('callback_when');
      when.setAttribute('aria-label', t('callback_when'));
      const send = el('button', 'send', t('callback_send'));
      send.type = 'submit';
      send.dataset.testid = 'cb-callback-send';
      form.append(el('p', '', t('callback_title')), phone, when, send);
      form.addEventListener('submit', (event) => {
        event.preventDefault();
        const frame = { type: 'callback.request', phone: phone.value.trim(), context: { page: location.href } };
        if (when.value.trim()) frame.when = when.value.trim();
        socket.whenReady(() => socket.send(frame));
      });
      offlineForm.after(form);
    }

    offlineShown.push(showForm);
    // A call nobody took: the form shows on its own (the offline form may not be there).
    missedShown.push(() => { showForm(); if (form) form.hidden = false; });
    frames['callback.requested'] = () => {
      if (!form) return;
      form.replaceChildren(el('p', '', t('callback_thanks')));
      form.dataset.state = 'sent';
    };
    // Keep it beside the offline form only: a call or chat hides that form, and this one with it.
    new MutationObserver(() => { if (form) form.hidden = offlineForm.hidden; })
      .observe(offlineForm, { attributes: true, attributeFilter: ['hidden'] });
  }

  // ---- an operator calls this page: the incoming-call card, Answer / Decline

  function incomingCall(api, frames) {
    const { panel, t, el, socket, open, startCall } = api;
    // The ring on show: { id, node, stopSound }
    let ringing = null;

    // A soft two-tone ring, only once the page has had a user gesture (browsers block sound before).
    function ringSound() {
      const active = navigator.userActivation ? navigator.userActivation.hasBeenActive : false;
      const Context = window.AudioContext || window.webkitAudioContext;
      if (!active || !Context) return () => {};
      const context = new Context();
      const gain = context.createGain();
      gain.gain.value = 0;
      gain.connect(context.destination);
      const tone = context.createOscillator();
      tone.frequency.value = 660;
      tone.connect(gain);
      tone.start();
      let on = false;
      const beat = setInterval(() => { on = !on; gain.gain.value = on ? 0.08 : 0; }, 600);
      return () => { clearInterval(beat); tone.stop(); context.close(); };
    }

    function stop() {
      if (!ringing) return;
      ringing.stopSound();
      ringing.node.remove();
      ringing = null;
    }

    frames['visitor_call.ring'] = (frame) => {
      const id = String(frame.id || '');
      if (!id) return;
      stop();
      const name = String((frame.operator && frame.operator.name) || t('our_team'));
      const node = el('div', 'incoming');
      node.dataset.testid = 'cb-incoming';
      node.setAttribute('role', 'alertdialog');
      const title = el('p', 'who', t('incoming_title', { name }));
      node.setAttribute('aria-label', title.textContent);
      const actions = el('div', 'actions');
      const answer = el('button', 'call', t('incoming_answer'));
      answer.type = 'button';
      answer.dataset.testid = 'cb-incoming-answer';
      const decline = el('button', 'chat', t('incoming_decline'));
      decline.type = 'button';
      decline.dataset.testid = 'cb-incoming-decline';
      answer.addEventListener('click', () => { stop(); startCall(undefined, id); });
      decline.addEventListener('click', () => {
        stop();
        socket.whenReady(() => socket.send({ type: 'visitor_call.decline', id }));
      });
      actions.append(answer, decline);
      node.append(title, actions);
      open();
      panel.append(node);
      ringing = { id, node, stopSound: ringSound() };
      answer.focus();
    };
    frames['visitor_call.over'] = (frame) => {
      if (ringing && ringing.id === String(frame.id)) stop();
    };
  }

  // ---- the microphone during a call: a level meter, "we can't hear you", a device picker

  // Below this RMS (about -46 dBFS) the input counts as silent: a dead or hardware-muted microphone
  // gives digital zeros, a live one in a quiet room stays above it.
  const SILENT_RMS = 0.005;
  const SILENT_MS = 3000;
  // Aliases Chrome lists beside the devices themselves: not a second microphone.
  const ALIASES = ['default', 'communications'];

  // call: the widget's call ({ stream, pc, next, done }); stream is swapped here when the shopper
  // picks another microphone, so mute, reoffers and the hang-up use the new one.
  function microphone(api, call) {
    const { panel, t, el, on } = api;
    const Context = window.AudioContext || window.webkitAudioContext;
    const box = el('div', 'mic');
    const meter = el('div', 'level');
    meter.dataset.testid = 'cb-mic-level';
    meter.setAttribute('role', 'meter');
    meter.setAttribute('aria-label', t('mic_level'));
    meter.setAttribute('aria-valuemin', '0');
    meter.setAttribute('aria-valuemax', '100');
    meter.setAttribute('aria-valuenow', '0');
    const bar = el('i', '');
    meter.append(bar);
    const warning = el('p', '', t('mic_silent'));
    warning.dataset.testid = 'cb-mic-warning';
    warning.setAttribute('role', 'status');
    warning.hidden = true;
    const picker = el('select', '');
    picker.dataset.testid = 'cb-mic-device';
    picker.setAttribute('aria-label', t('mic_device'));
    picker.hidden = true;
    box.append(meter, picker, warning);
    panel.querySelector('.actions').before(box);

    const context = Context ? new Context() : null;
    let source = null;
    let analyser = null;
    let heard = false;
    let since = Date.now();
    const samples = new Float32Array(1024);

    function listen(stream) {
      if (!context) return;
      if (source) source.disconnect();
      source = context.createMediaStreamSource(stream);
      analyser = context.createAnalyser();
      analyser.fftSize = samples.length;
      source.connect(analyser);
      // A new microphone is checked afresh.
      heard = false;
      since = Date.now();
      context.resume().catch(() => {});
    }

    function tick() {
      if (call.done) { stop(); return; }
      // A context the browser keeps suspended (no user gesture yet) hears zeros: say nothing then.
      if (!analyser || context.state !== 'running') { since = Date.now(); return; }
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const value of samples) sum += value * value;
      const rms = Math.sqrt(sum / samples.length);
      // -60 dBFS .. 0 dBFS on the meter
      const level = rms > 0 ? Math.max(0, Math.min(100, Math.round((20 * Math.log10(rms) + 60) * 100 / 60))) : 0;
      meter.setAttribute('aria-valuenow', String(level));
      bar.style.width = `${level}%`;
      const muted = !call.stream.getAudioTracks().some((track) => track.enabled);
      if (rms >= SILENT_RMS) heard = true;
      // Only at the start of a call (or of a microphone): a shopper who listens later is not nagged.
      warning.hidden = heard || muted || Date.now() - since < SILENT_MS;
    }

    async function devices() {
      if (!navigator.mediaDevices.enumerateDevices) return;
      let inputs = [];
      try {
        inputs = (await navigator.mediaDevices.enumerateDevices()).filter((device) => device.kind === 'audioinput');
      } catch (e) { return; }
      if (call.done || inputs.filter((device) => !ALIASES.includes(device.deviceId)).length < 2) return;
      const using = call.stream.getAudioTracks()[0];
      const current = using && using.getSettings ? using.getSettings().deviceId : '';
      picker.replaceChildren(...inputs.map((device, n) => {
        const option = el('option', '', device.label || `${t('mic_device')} ${n + 1}`);
        option.value = device.deviceId;
        option.selected = device.deviceId === current;
        return option;
      }));
      picker.hidden = false;
    }

    // Another microphone: the senders take its track (RTCRtpSender.replaceTrack: same codec, no renegotiation).
    async function use(deviceId) {
      let stream;
      try {
        stream = await navigator.mediaDevices.getUserMedia({ audio: { deviceId: { exact: deviceId } } });
      } catch (e) {
        devices();
        return;
      }
      const track = stream.getAudioTracks()[0];
      if (call.done || !track) { stream.getTracks().forEach((each) => each.stop()); return; }
      const old = call.stream;
      track.enabled = old.getAudioTracks().some((each) => each.enabled);
      for (const pc of [call.pc, call.next]) {
        if (!pc) continue;
        for (const sender of pc.getSenders()) {
          if (!sender.track || sender.track.kind === 'audio') await sender.replaceTrack(track).catch(() => {});
        }
      }
      call.stream = stream;
      old.getTracks().forEach((each) => each.stop());
      listen(stream);
    }

    picker.addEventListener('change', () => use(picker.value));
    const timer = setInterval(tick, 100);
    const off = on('call.ended', () => stop());
    // Safari starts a context only in a gesture: the next touch in the panel resumes it.
    const resume = () => { if (context) context.resume().catch(() => {}); };
    panel.addEventListener('pointerdown', resume);
    function stop() {
      clearInterval(timer);
      off();
      panel.removeEventListener('pointerdown', resume);
      if (source) source.disconnect();
      if (context) context.close().catch(() => {});
      box.remove();
    }
    if (call.done) { stop(); return; }
    listen(call.stream);
    devices();
  }

  // ---- a call's recovery: its media went (ICE disconnected for 2 s, failed) or the network changed

  function recovery(api) {
    const { t, socket, show, view, peer, offer, call, lost, giveUpAfter } = api;

    // The server has no ICE restart (aiortc): a new peer connection replaces our leg (call.reanswer).
    async function reoffer(current) {
      if (current.done || current.next || !current.token) return;
      show(view(), t('reconnecting'));
      // Offline, an offer would only wait in a dead socket: `online` brings us back here. The socket
      // may not close for minutes, so the give-up the server's window sets starts now.
      if (!navigator.onLine) {
        if (!current.offline) current.offline = setTimeout(() => current.done || lost(current), giveUpAfter());
        return;
      }
      const pc = current.next = peer(current);
      try {
        await offer(pc);
        // No answer in 3 s: the socket went with the old network; a new one resumes and offers again.
        if (!current.done && socket.send({ type: 'call.reoffer', call_id: current.callId, sdp: pc.localDescription.sdp })) {
          setTimeout(() => current.next === pc && socket.close(), 3000);
          return;
        }
      } catch (e) { /* the next trouble tries again */ }
      pc.close();
      current.next = null;
    }

    // A new network (Wi-Fi to mobile data): our media path is gone, offer a new one. Watched from the
    // first call on (this file comes with its microphone check).
    const moved = () => {
      const current = call();
      if (!current || !current.flowed) return;
      if (navigator.onLine) { clearTimeout(current.offline); current.offline = 0; }
      reoffer(current);
    };
    window.addEventListener('online', moved);
    window.addEventListener('offline', moved);
    if (navigator.connection) navigator.connection.addEventListener('change', moved);

    function reanswer(current, sdp) {
      if (current.done || !current.next) return;
      const old = current.pc;
      const pc = current.pc = current.next;
      current.next = null;
      pc.setRemoteDescription({ type: 'answer', sdp }).then(() => old.close(), () => {});
    }

    return { reoffer, reanswer };
  }

  // ---- during a chat: the operator's preview of what is typed, their offer of a call, the transcript

  function chatting(api, frames) {
    const { root, t, el, socket, startCall, chat, addLine } = api;
    const input = root.querySelector('.say textarea');
    const mail = root.querySelector('.mailme');
    let timer = null;
    let last = 0;

    // The operator sees what is being typed before it is sent, at most every 300 ms.
    function sendTyping() {
      clearTimeout(timer);
      const wait = 300 - (Date.now() - last);
      if (wait > 0) { timer = setTimeout(sendTyping, wait); return; }
      last = Date.now();
      if (chat()) socket.send({ type: 'chat.typing', text: input.value });
    }

    input.addEventListener('input', sendTyping);
    // widget.js sent the message (and emptied the box) first: no preview of it comes after it.
    input.form.addEventListener('submit', () => { if (!input.value) clearTimeout(timer); });

    frames['chat.call_offered'] = (frame) => {
      const name = frame.operator && frame.operator.name;
      const accept = el('button', 'call', t('call_offer', { name: name || t('us') }));
      accept.dataset.testid = 'cb-accept-call';
      accept.addEventListener('click', () => {
        accept.disabled = true;
        const current = chat();
        startCall(current && current.id);
      });
      const item = el('li', 'system');
      item.append(accept);
      addLine(item);
    };

    mail.addEventListener('submit', (event) => {
      event.preventDefault();
      const email = mail.elements.email.value.trim();
      if (email && socket.send({ type: 'chat.transcript', email })) mail.elements.email.value = '';
    });
    frames['chat.transcript'] = (frame) => {
      mail.elements.email.placeholder = frame.status === 'failed'
        ? t('transcript_failed') : t(frame.status === 'sent' ? 'transcript_sent' : 'transcript_sending');
    };
  }

  register((api) => {
    const { root, panel, t, el, socket, on, store, stored } = api;
    const style = document.createElement('style');
    style.textContent = CSS;
    root.append(style);

    // Frame type → what takes it; and what shows beside the offline form.
    const frames = {};
    const offlineShown = [];

    // ---- satisfaction: asked once per conversation, rated or dismissed, never again

    // Conversations this browser has rated or dismissed (the server remembers them too).
    const ASKED_KEY = 'callbutton.csat';
    const asked = () => { try { return JSON.parse(stored(ASKED_KEY) || '[]'); } catch (e) { return []; } };
    const done = (id) => asked().includes(id);
    const forget = (id) => store(ASKED_KEY, JSON.stringify(asked().concat(id).slice(-50)));
    // The card on show: { id, node }
    let card = null;
    // Asked while the panel was closed (the server asks again on a new page): shown when it opens.
    let waitingAsk = null;

    function ask(frame) {
      const id = String(frame.conversation_id || '');
      if (!id || done(id) || (card && card.id === id)) return;
      if (panel.hidden) { waitingAsk = frame; return; }
      showCard(id, frame.operator && frame.operator.name);
    }

    on('open', () => {
      if (waitingAsk && !card) { const frame = waitingAsk; waitingAsk = null; ask(frame); }
    });

    function showCard(id, name) {
      if (card) card.node.remove();
      const node = el('div', 'csat');
      node.dataset.testid = 'cb-csat';
      node.setAttribute('role', 'group');
      const question = el('p', 'q', name ? t('csat_question_name', { name }) : t('csat_question'));
      node.setAttribute('aria-label', question.textContent);
      const dismiss = el('button', 'close', '×');
      dismiss.type = 'button';
      dismiss.dataset.testid = 'cb-csat-close';
      dismiss.setAttribute('aria-label', t('csat_dismiss'));
      const scores = el('div', 'scores');
      let score = 0;
      const form = el('form', 'rate');
      const comment = el('textarea', '');
      comment.dataset.testid = 'cb-csat-comment';
      comment.maxLength = 1000;
      comment.rows = 2;
      comment.placeholder = t('csat_comment');
      comment.setAttribute('aria-label', t('csat_comment'));
      const sendButton = el('button', 'send', t('csat_send'));
      sendButton.type = 'submit';
      sendButton.dataset.testid = 'cb-csat-send';
      sendButton.disabled = true;
      for (let n = 1; n <= 5; n++) {
        const pick = el('button', '', String(n));
        pick.type = 'button';
        pick.dataset.testid = `cb-csat-${n}`;
        pick.setAttribute('aria-pressed', 'false');
        pick.setAttribute('aria-label', t('csat_score', { n }));
        pick.addEventListener('click', () => {
          score = n;
          for (const other of scores.children) other.setAttribute('aria-pressed', String(other === pick));
          sendButton.disabled = false;
        });
        scores.append(pick);
      }
      form.append(comment, sendButton);
      form.addEventListener('submit', (event) => {
        event.preventDefault();
        if (!score) return;
        const frame = { type: 'csat.rate', conversation_id: id, score };
        if (comment.value.trim()) frame.comment = comment.value.trim();
        sendButton.disabled = true;
        socket.whenReady(() => socket.send(frame));
      });
      dismiss.addEventListener('click', () => {
        forget(id);
        socket.whenReady(() => socket.send({ type: 'csat.dismiss', conversation_id: id }));
        node.remove();
        card = null;
      });
      node.append(dismiss, question, scores, form);
      panel.append(node);
      card = { id, node };
    }

    frames['csat.ask'] = ask;
    frames['csat.thanks'] = (frame) => {
      const id = String(frame.conversation_id || '');
      forget(id);
      if (!card || card.id !== id) return;
      card.node.replaceChildren(el('p', 'q', t('csat_thanks')));
      const node = card.node;
      card = null;
      setTimeout(() => node.remove(), 4000);
    };

    const missedShown = [];
    callBack(api, frames, offlineShown, missedShown);
    incomingCall(api, frames);
    chatting(api, frames);
    const { reoffer, reanswer } = recovery(api);

    return {
      mic(call) {
        microphone(api, call);
      },
      reoffer,
      reanswer,
      frame(frame) {
        const take = frames[frame.type];
        if (take) take(frame);
      },
      offline() {
        for (const fn of offlineShown) fn();
      },
      missed() {
        for (const fn of missedShown) fn();
      },
    };
  });
})();
