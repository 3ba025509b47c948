/* The call's health as the operator sees it: their own microphone (a level meter, "no sound from your
 * microphone" when it is silent at the start, a device picker) and a live quality badge.
 *
 * The badge reads the peer connection's getStats() every 2 s. The server sends no quality figures
 * during a call, so what it shows is this browser's own view: loss and jitter of the audio arriving
 * (inbound-rtp: the shopper's voice, forwarded by the server with its sequence numbers kept, so a
 * packet lost on the shopper's leg is a gap here too), the round trip to the server (remote-inbound-rtp,
 * from the server's RTCP receiver reports; the selected candidate pair's STUN round trip when those
 * carry none) and whether the selected candidate pair runs through TURN.
 */
import { $, el } from './dom.js';
import { t } from './i18n.js';

// Below this RMS (about -46 dBFS) the input counts as silent: a dead or hardware-muted microphone
// gives digital zeros, a live one in a quiet room stays above it.
const SILENT_RMS = 0.005;
const SILENT_MS = 3000;
const METER_MS = 100;
const STATS_MS = 2000;
// The shopper's audio is poor past these (over the last 2 s): Opus conceals a few per cent of loss.
const POOR_LOSS_PERCENT = 5;
const POOR_JITTER_MS = 50;
// Aliases Chrome lists beside the devices themselves: not a second microphone.
const ALIASES = ['default', 'communications'];

/** Where the call's checks go: under the call's timer. */
function place(node) {
  $('active-timer').after(node);
}

/**
 * The operator's microphone during `call` ({ stream, pc, next }): level meter, silent warning, and a
 * picker when the browser lists more than one input; a new pick replaces the senders' track (no
 * renegotiation) and becomes `call.stream`. Returns `stop()`.
 */
export function watchMicrophone(call) {
  const Context = window.AudioContext || window.webkitAudioContext;
  const bar = el('span', { class: 'mic-bar' });
  const meter = el('span', { class: 'mic-level', role: 'meter', 'data-testid': 'op-mic-level',
    'aria-label': t('mic_level'), 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': '0' }, bar);
  const picker = el('select', { 'data-testid': 'op-mic-device', 'aria-label': t('mic_device') });
  picker.hidden = true;
  const warning = el('p', { class: 'mic-warning', role: 'status', 'data-testid': 'op-mic-warning' }, t('mic_silent'));
  warning.hidden = true;
  const box = el('div', { class: 'mic-check' }, meter, picker, warning);
  place(box);

  const context = Context ? new Context() : null;
  const samples = new Float32Array(1024);
  let source = null;
  let analyser = null;
  let heard = false;
  let since = Date.now();
  let stopped = false;

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
    // A context the browser keeps suspended (no user gesture yet) hears zeros: say nothing then.
    if (!analyser || context.state !== 'running') {
      since = Date.now();
      return;
    }
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const value of samples) sum += value * value;
    const rms = Math.sqrt(sum / samples.length);
    // -60 dBFS .. 0 dBFS on the meter
    const level = rms > 0 ? Math.max(0, Math.min(100, Math.round(((20 * Math.log10(rms) + 60) * 100) / 60))) : 0;
    meter.setAttribute('aria-valuenow', String(level));
    bar.style.width = `${level}%`;
    const muted = !call.stream.getAudioTracks().some((track) => track.enabled);
    if (rms >= SILENT_RMS) heard = true;
    // Only at the start of a call (or of a microphone): an operator who listens later is not nagged.
    warning.hidden = heard || muted || Date.now() - since < SILENT_MS;
  }

  async function listDevices() {
    if (!navigator.mediaDevices.enumerateDevices) return;
    let inputs;
    try {
      inputs = (await navigator.mediaDevices.enumerateDevices()).filter((device) => device.kind === 'audioinput');
    } catch (error) {
      return;
    }
    if (stopped || inputs.filter((device) => !ALIASES.includes(device.deviceId)).length < 2) return;
    const using = call.stream.getAudioTracks()[0];
    const current = using && using.getSettings ? using.getSettings().deviceId : '';
    picker.replaceChildren(...inputs.map((device, n) => {
      const option = el('option', { value: device.deviceId }, device.label || `${t('mic_device')} ${n + 1}`);
      option.selected = device.deviceId === current;
      return option;
    }));
    picker.hidden = false;
  }

  // The senders take the new track (RTCRtpSender.replaceTrack: same codec, no renegotiation).
  async function use(deviceId) {
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: { deviceId: { exact: deviceId } } });
    } catch (error) {
      listDevices();
      return;
    }
    const track = stream.getAudioTracks()[0];
    if (stopped || !track) {
      stream.getTracks().forEach((each) => each.stop());
      return;
    }
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
  const timer = setInterval(tick, METER_MS);
  // Safari starts a context only in a gesture: the operator's next click resumes it.
  const resume = () => { if (context) context.resume().catch(() => {}); };
  document.addEventListener('pointerdown', resume);
  listen(call.stream);
  listDevices();

  return function stop() {
    if (stopped) return;
    stopped = true;
    clearInterval(timer);
    document.removeEventListener('pointerdown', resume);
    if (source) source.disconnect();
    if (context) context.close().catch(() => {});
    box.remove();
  };
}

/** The figures of one getStats() report that the badge shows. */
function figures(report, before) {
  let inbound = null;
  let remoteInbound = null;
  let pair = null;
  const byId = new Map();
  for (const stat of report.values()) {
    byId.set(stat.id, stat);
    if (stat.type === 'inbound-rtp' && stat.kind === 'audio') inbound = stat;
    else if (stat.type === 'remote-inbound-rtp' && stat.kind === 'audio') remoteInbound = stat;
    else if (stat.type === 'transport' && stat.selectedCandidatePairId) pair = stat.selectedCandidatePairId;
  }
  if (pair) pair = byId.get(pair);
  else pair = Array.from(byId.values()).find((stat) => stat.type === 'candidate-pair' && stat.nominated && stat.state === 'succeeded');
  const received = inbound ? inbound.packetsReceived || 0 : 0;
  const lost = inbound ? Math.max(0, inbound.packetsLost || 0) : 0;
  // Loss over the last interval, not since the start: a bad patch shows while it lasts.
  const newReceived = received - (before ? before.received : 0);
  const newLost = lost - (before ? before.lost : 0);
  const lossPercent = newReceived + newLost > 0 ? (100 * Math.max(0, newLost)) / (newReceived + newLost) : 0;
  let rtt = remoteInbound && typeof remoteInbound.roundTripTime === 'number' ? remoteInbound.roundTripTime : null;
  let rttFrom = rtt === null ? null : 'rtcp';
  if (rtt === null && pair && typeof pair.currentRoundTripTime === 'number') {
    rtt = pair.currentRoundTripTime;
    rttFrom = 'ice';
  }
  const local = pair && byId.get(pair.localCandidateId);
  const remote = pair && byId.get(pair.remoteCandidateId);
  return {
    received,
    lost,
    lossPercent,
    jitterMs: inbound && typeof inbound.jitter === 'number' ? inbound.jitter * 1000 : null,
    rttMs: rtt === null ? null : rtt * 1000,
    rttFrom,
    // What the server reports of our own audio (its receiver reports), for the badge's data only.
    sentLossPercent: remoteInbound && typeof remoteInbound.fractionLost === 'number' ? remoteInbound.fractionLost * 100 : null,
    relayed: Boolean((local && local.candidateType === 'relay') || (remote && remote.candidateType === 'relay')),
  };
}

const shown = (value, digits) => (value === null ? '–' : value.toFixed(digits));

/**
 * The live quality badge of `call` (reads `call.pc` each time: a reoffer swaps it), with a warning when
 * the shopper's audio arrives poorly. Returns `stop()`.
 */
export function watchQuality(call) {
  const badge = el('p', { class: 'quality', 'data-testid': 'op-quality', 'aria-label': t('quality_label') });
  badge.hidden = true;
  const warning = el('p', { class: 'quality-warning', role: 'status', 'data-testid': 'op-quality-warning' },
    t('quality_poor'));
  warning.hidden = true;
  place(warning);
  place(badge);
  let before = null;
  let pc = null;
  let stopped = false;

  async function read() {
    const current = call.pc;
    if (!current || current.connectionState === 'closed') return;
    let report;
    try {
      report = await current.getStats();
    } catch (error) {
      return;
    }
    if (stopped) return;
    // A new peer connection (reoffer) counts its packets from zero.
    if (current !== pc) before = null;
    pc = current;
    const now = figures(report, before);
    before = now;
    if (!now.received) return;
    let text = t('quality_figures', { loss: now.lossPercent.toFixed(1), jitter: shown(now.jitterMs, 0),
      rtt: shown(now.rttMs, 0) });
    if (now.relayed) text += ` · ${t('quality_relayed')}`;
    badge.textContent = text;
    badge.dataset.loss = now.lossPercent.toFixed(1);
    badge.dataset.jitter = shown(now.jitterMs, 1);
    badge.dataset.rtt = shown(now.rttMs, 1);
    badge.dataset.rttFrom = now.rttFrom || '';
    badge.dataset.sentLoss = shown(now.sentLossPercent, 1);
    badge.dataset.relayed = String(now.relayed);
    const poor = now.lossPercent >= POOR_LOSS_PERCENT || (now.jitterMs !== null && now.jitterMs >= POOR_JITTER_MS);
    badge.dataset.quality = poor ? 'poor' : 'good';
    badge.classList.toggle('poor', poor);
    badge.hidden = false;
    warning.hidden = !poor;
  }

  const timer = setInterval(read, STATS_MS);
  read();
  return function stop() {
    if (stopped) return;
    stopped = true;
    clearInterval(timer);
    badge.remove();
    warning.remove();
  };
}
