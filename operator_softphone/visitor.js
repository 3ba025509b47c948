/* The visitor panel (op-visitor): what the server tells about the caller, whatever fields it sends. */
import { $, el, safeLink } from './dom.js';
import { t } from './i18n.js';

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

/** Shows this call's visitor in the panel, or that no call is selected (null). */
export function showVisitor(call) {
  const fields = $('visitor-fields');
  fields.replaceChildren();
  $('visitor-empty').hidden = Boolean(call);
  if (!call) return;
  for (const [label, text] of visitorRows(call)) {
    const isUrl = /^https?:\/\//i.test(text);
    fields.append(el('dt', {}, label), el('dd', {}, isUrl ? safeLink(text) : text));
  }
}
