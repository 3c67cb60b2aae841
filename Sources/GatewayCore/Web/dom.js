// DOM helpers. Text from users and from the server is only ever set as text (textContent, text
// nodes, setAttribute); nothing here parses HTML.

/**
 * Creates an element. `props`: `class`, `text`, `dataset` (object), `on<event>` (listener), any
 * other key as an attribute (true for a boolean attribute; null, undefined and false are skipped).
 * Children are nodes or strings (strings become text nodes).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) el.append(child);
  }
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
/** The device types the page knows, with their names. */
export const DEVICE_TYPES = { iphone: 'iPhone', android: 'Android', laptop: 'Laptop', other: 'Other' };

/** The icon of a device type (a <use> of the page's sprite; unknown types get "other"). */
export function typeIcon(type) {
  const known = Object.hasOwn(DEVICE_TYPES, type) ? type : 'other';
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  svg.setAttribute('viewBox', '0 0 24 24');
  const use = document.createElementNS(SVG_NS, 'use');
  use.setAttribute('href', `#icon-${known}`);
  svg.append(use);
  return svg;
}

/** Shows or hides an element. */
export function show(el, visible = true) { el.hidden = !visible; }

/** Puts a message in an element and shows it, or hides it for an empty message. */
export function message(el, text) {
  el.textContent = text || '';
  el.hidden = !text;
}

/** "2 min 5 s", "45 s", "1 h 3 min". */
export function formatDuration(seconds) {
  const s = Math.max(0, Math.ceil(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60), rest = s % 60;
  if (m < 60) return rest ? `${m} min ${rest} s` : `${m} min`;
  const hours = Math.floor(m / 60), mins = m % 60;
  return mins ? `${hours} h ${mins} min` : `${hours} h`;
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
/** A timestamp for people, in their time zone. */
export function formatDateTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : dateTime.format(d);
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
/** "12 seconds ago", "3 minutes ago", … relative to `now` (ms). */
export function formatAgo(iso, now = Date.now()) {
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return '';
  const diff = Math.round((t - now) / 1000);
  const abs = Math.abs(diff);
  if (abs < 5) return 'just now';
  if (abs < 60) return relative.format(diff, 'second');
  if (abs < 3600) return relative.format(Math.round(diff / 60), 'minute');
  if (abs < 86400) return relative.format(Math.round(diff / 3600), 'hour');
  return relative.format(Math.round(diff / 86400), 'day');
}

/** 1536 → "1.5 KiB". */
export function formatBytes(n) {
  const v = Number(n) || 0;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0, x = v;
  while (x >= 1024 && i < units.length - 1) { x /= 1024; i++; }
  return i === 0 ? `${x} B` : `${x.toFixed(x < 10 ? 1 : 0)} ${units[i]}`;
}

/** The elements inside `root` that Tab can reach, in order. */
export function tabbables(root) {
  const selector = 'a[href], button, input, select, textarea, summary, [tabindex]:not([tabindex="-1"])';
  return [...root.querySelectorAll(selector)].filter((el) => {
    if (el.disabled || el.closest('[hidden]') || el.closest('[inert]')) return false;
    if (el.type === 'radio' && !el.checked) return false;   // a radio group is one tab stop
    if (el.tabIndex < 0) return false;
    const details = el.closest('details');
    if (details && !details.open && el.tagName !== 'SUMMARY' && !el.closest('summary')) return false;
    return el.getClientRects().length > 0;
  });
}

/**
 * Modal behaviour for a <dialog>: open with showModal, keep Tab and Shift+Tab inside it, close on
 * Esc (the dialog's own cancel), give focus back to what opened it. `onClose` runs after every close.
 */
export class Modal {
  constructor(dialog, { onClose } = {}) {
    this.dialog = dialog;
    this.returnTo = null;
    this.onClose = onClose;
    this.shown = false;
    dialog.addEventListener('keydown', (event) => this.trap(event));
    // Esc closes the dialog natively; the close event comes a moment later.
    dialog.addEventListener('close', () => this.closed());
    // A click on the backdrop (the dialog element itself, outside its content) does nothing: a
    // half-read private key should not vanish by a stray click.
    for (const button of dialog.querySelectorAll('[data-close]')) {
      button.addEventListener('click', () => this.close());
    }
  }

  open(focusTarget) {
    this.returnTo = document.activeElement instanceof HTMLElement ? document.activeElement : null;
    if (!this.dialog.open) this.dialog.showModal();
    this.shown = true;
    (focusTarget || tabbables(this.dialog)[0])?.focus();
  }

  /** Closes the dialog; its clean-up has run when this returns. */
  close() {
    if (this.dialog.open) this.dialog.close();
    this.closed();
  }

  closed() {
    if (!this.shown) return;
    this.shown = false;
    if (this.onClose) this.onClose();
    const back = this.returnTo;
    this.returnTo = null;
    if (back && back.isConnected) back.focus();
  }

  trap(event) {
    if (event.key !== 'Tab') return;
    const items = tabbables(this.dialog);
    if (items.length === 0) { event.preventDefault(); return; }
    const first = items[0], last = items[items.length - 1];
    const active = document.activeElement;
    const inside = this.dialog.contains(active);
    if (event.shiftKey && (active === first || !inside)) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && (active === last || !inside)) {
      event.preventDefault();
      first.focus();
    }
  }
}

/** The .conf file name for a device's slug. */
export function configFileName(slug) {
  // wg-quick names the interface after the file, and Linux interface names hold at most 15 characters.
  const safe = String(slug || 'mesh').toLowerCase().replace(/[^a-z0-9-]+/g, '-').slice(0, 15).replace(/-+$/, '');
  return `${safe || 'mesh'}.conf`;
}

/** A QR code's SVG as a data: URL for an <img>. */
export function svgDataURL(svg) {
  // The SVG is shown as an image (no scripts, no access to the page), from a data: URL.
  const bytes = new TextEncoder().encode(svg);
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return `data:image/svg+xml;base64,${btoa(binary)}`;
}
