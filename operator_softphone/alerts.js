/* How the softphone gets the operator's attention: the alert line, the ring of waiting calls, the
 * short sound of a new chat or message, the flashing title and desktop notifications. Nothing makes
 * a sound over a call: a call that rings meanwhile shows a quiet line (op-call-waiting) instead.
 */
import { $ } from './dom.js';
import { t } from './i18n.js';

const RING_EVERY_MS = 3000; // ~1 s of tone, ~2 s of silence
const ALERT_MS = 10000;

/** The page's alerts; `inCall()` says whether a call is on (no sound is ever made over a call). */
export function createAlerts({ inCall }) {
  const alertBox = $('alert');
  const waitingNotice = $('call-waiting'); // op-call-waiting: a call rings while another is on
  let alertTimer = null;
  let audioContext = null;
  let ringTimer = null;
  let titleTimer = null;
  let chatTitleTimer = null;
  let notificationAsked = false;

  function showAlert(message) {
    alertBox.textContent = message;
    clearTimeout(alertTimer);
    alertTimer = setTimeout(() => { alertBox.textContent = ''; }, ALERT_MS);
  }

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
    if (!audioContext || audioContext.state !== 'running' || inCall()) return; // never over a call
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

  /** One ring: the tone, unless the operator is in a call — then the quiet line says a call waits. */
  function ring() {
    const quiet = inCall();
    waitingNotice.hidden = !quiet;
    if (!quiet) { try { beep(); } catch (e) { /* sound is a courtesy */ } }
  }

  /**
   * Rings (sound and title) until stopRinging(); a second call changes nothing, except that a call
   * answered meanwhile turns the ring quiet at once (no tone over a call, the waiting line instead).
   */
  function startRinging() {
    if (ringTimer) {
      waitingNotice.hidden = !inCall();
      return;
    }
    ring();
    ringTimer = setInterval(ring, RING_EVERY_MS);
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
    waitingNotice.hidden = true;
    document.title = t('title');
  }

  /** A desktop notification of a ringing call (to close when it stops ringing), or null. */
  function callNotification(call) {
    if (!('Notification' in window) || Notification.permission !== 'granted') return null;
    try {
      const notification = new Notification(t('incoming_call'), {
        body: [call.site, call.title || call.page].filter(Boolean).map(String).join(' — '),
        tag: `call-${call.id}`,
        silent: inCall(), // over a call the system's notification sound would be a ring too
      });
      notification.onclick = () => { window.focus(); notification.close(); };
      return notification;
    } catch (e) {
      return null; // e.g. Chrome on Android only allows notifications from a service worker
    }
  }

  /** A new chat or message: a short sound, the title for a few seconds, a notification when away. */
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

  return { showAlert, startRinging, stopRinging, callNotification, chatAlert };
}
