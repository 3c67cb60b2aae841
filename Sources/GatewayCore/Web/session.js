// The user's bearer token: taken from a login link's fragment (#token=…, which browsers never send
// to a server), kept in sessionStorage (this tab only, gone when it closes), removed from the
// address bar at once.

const KEY = 'quazzar.mesh.token';
let memory = null;   // when sessionStorage is unavailable (privacy modes), the token lives only here

function storage() {
  try { return window.sessionStorage; } catch { return null; }
}

/** The stored token, or null. */
export function storedToken() {
  const s = storage();
  try { return (s && s.getItem(KEY)) || memory; } catch { return memory; }
}

/** Stores a token for this tab. */
export function storeToken(token) {
  memory = token;
  const s = storage();
  try { if (s) s.setItem(KEY, token); } catch { /* memory only */ }
}

/** Forgets the token. */
export function clearToken() {
  memory = null;
  const s = storage();
  try { if (s) s.removeItem(KEY); } catch { /* nothing stored */ }
}

/**
 * Takes `token` out of the URL fragment, if there, and rewrites the address (and the history
 * entry) without it. Returns the token or null. Other fragment parameters stay.
 */
export function takeTokenFromFragment() {
  const hash = window.location.hash.replace(/^#/, '');
  if (!hash) return null;
  const params = new URLSearchParams(hash);
  const token = params.get('token');
  if (token === null) return null;
  params.delete('token');
  const rest = params.toString();
  const url = window.location.pathname + window.location.search + (rest ? `#${rest}` : '');
  window.history.replaceState(window.history.state, '', url);
  return normalizeToken(token);
}

/** Trims a pasted token and drops a leading "Bearer ". Returns '' for nothing usable. */
export function normalizeToken(raw) {
  return String(raw || '').trim().replace(/^bearer\s+/i, '').trim();
}

/** Whether a string has the shape of a JWT (three base64url parts). The server decides validity. */
export function looksLikeJWT(token) {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(token);
}

/**
 * The token's claims, read without verifying (only the server can): used to show the role and to
 * notice expiry. Returns {} when unreadable.
 */
export function claims(token) {
  try {
    const part = token.split('.')[1];
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const value = JSON.parse(new TextDecoder().decode(bytes));
    return value && typeof value === 'object' ? value : {};
  } catch {
    return {};
  }
}
