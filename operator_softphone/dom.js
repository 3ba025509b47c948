/* The softphone's DOM vocabulary, shared by all its modules.
 *
 * Everything that comes from the network is shown with textContent (el() makes text nodes of strings):
 * shoppers can put HTML in their page titles, URLs, names and messages.
 */

/** The page's element with this id. */
export const $ = (id) => document.getElementById(id);

/** Builds an element; strings among the children become text nodes, never markup. */
export function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  for (const child of children) {
    if (child === null || child === undefined || child === '') continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

/** A link for http(s) URLs only (no javascript: or data: from a shopper), plain text otherwise. */
export function safeLink(value) {
  const text = String(value);
  let url;
  try { url = new URL(text); } catch (e) { return document.createTextNode(text); }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return document.createTextNode(text);
  return el('a', { href: url.href, target: '_blank', rel: 'noopener noreferrer' }, text);
}

/** A duration as m:ss, or h:mm:ss from an hour on. */
export function clock(ms) {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  const minutes = Math.floor(seconds / 60);
  const rest = String(seconds % 60).padStart(2, '0');
  return minutes >= 60
    ? `${Math.floor(minutes / 60)}:${String(minutes % 60).padStart(2, '0')}:${rest}`
    : `${minutes}:${rest}`;
}
