/* The softphone's words: the server's language pack for the operator's browser language, and the
 * wire's codes (docs/signaling.md) said in those words.
 */

let pack = {}; // set once by usePack(), before the socket opens

/** A text of the language pack, with {name} placeholders filled (the socket opens once the pack is here). */
export function t(key, values) {
  let text = typeof pack[key] === 'string' ? pack[key] : key;
  for (const [name, value] of Object.entries(values || {})) text = text.split(`{${name}}`).join(String(value));
  return text;
}

// The page's own texts carry their key: data-i18n for the text, data-i18n-label for aria-label,
// data-i18n-placeholder for a placeholder (the HTML's English shows until the pack is here).
/** Takes the pack of `lang` and puts its words on the page. */
export function usePack(texts, lang) {
  pack = texts;
  if (lang) document.documentElement.lang = lang;
  for (const node of document.querySelectorAll('[data-i18n]')) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll('[data-i18n-label]')) node.setAttribute('aria-label', t(node.dataset.i18nLabel));
  for (const node of document.querySelectorAll('[data-i18n-placeholder]')) node.placeholder = t(node.dataset.i18nPlaceholder);
  document.title = t('title');
}

/** A call's end, withdrawal or failed transfer reason (the server's codes) in the operator's words. */
export function reasonText(code) {
  const texts = {
    completed: t('r_completed'), missed: t('r_missed'), abandoned: t('r_abandoned'), declined: t('r_declined'),
    failed: t('r_failed'), dropped: t('r_dropped'), lost: t('r_lost'), timeout: t('r_timeout'),
    answered_elsewhere: t('r_answered_elsewhere'), unknown: t('r_unknown'),
  };
  return Object.hasOwn(texts, code) ? texts[code] : String(code);
}

/** Why a chat's visitor could not call (the widget's fallback codes). */
export const fallbackTexts = () => ({
  microphone_denied: t('fb_microphone_denied'), microphone_failed: t('fb_microphone_failed'),
  no_webrtc: t('fb_no_webrtc'), ice_failed: t('fb_ice_failed'), no_answer: t('fb_no_answer'),
  all_busy: t('fb_all_busy'), declined: t('fb_declined'), failed: t('fb_failed'),
});
