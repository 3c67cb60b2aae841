// The Gateway's HTTP API (docs/api.md), as the page uses it. Two ways to be signed in: a bearer token
// (a login link or a pasted token), which travels only in the Authorization header, never in a URL or
// a cookie; or the session cookie a sign-in through an identity provider set (HttpOnly: the page
// never sees it), sent by the browser on same-origin requests.

/** An error answer of the API: `{"error": {code, message, ...}}`, or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, body, retryAfterHeader) {
    const e = (body && typeof body === 'object' && body.error) || {};
    super(typeof e.message === 'string' && e.message ? e.message : ApiError.fallbackMessage(status));
    this.status = status;
    this.code = typeof e.code === 'string' ? e.code : (status === 0 ? 'network' : 'unknown');
    this.detail = e;
    const fromBody = Number(e.retry_after_seconds);
    const fromHeader = Number(retryAfterHeader);
    this.retryAfterSeconds = Number.isFinite(fromBody) && fromBody > 0 ? fromBody
      : (Number.isFinite(fromHeader) && fromHeader > 0 ? fromHeader : null);
  }

  static fallbackMessage(status) {
    if (status === 0) return 'The server could not be reached. Check your connection; the page keeps trying.';
    if (status >= 500) return `The server could not answer (HTTP ${status}). Try again in a moment.`;
    return `The request was refused (HTTP ${status}).`;
  }
}

/**
 * One request. Resolves to the parsed JSON body (or null for 204); rejects with an ApiError.
 * @param {string} method
 * @param {string} path  a path of this origin, e.g. "/api/mesh/devices"
 * @param {{token?: string, body?: object, signal?: AbortSignal}} options
 */
export async function request(method, path, { token, body, signal } = {}) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      // With a token, no cookie goes along; without one, the session cookie does (same origin only).
      credentials: token ? 'omit' : 'same-origin',
      referrerPolicy: 'no-referrer',
      signal,
    });
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError(0, null, null);
  }
  let parsed = null;
  if (response.status !== 204) {
    const text = await response.text();
    if (text) {
      try { parsed = JSON.parse(text); } catch { parsed = null; }
    }
  }
  if (!response.ok) throw new ApiError(response.status, parsed, response.headers.get('Retry-After'));
  return parsed;
}

/** The calls of the page, bound to a token, or (token null) to the session cookie. */
export class MeshAPI {
  constructor(token) { this.token = token; }

  static uiConfig() { return request('GET', '/api/mesh/ui-config'); }

  get usesSession() { return !this.token; }

  session() { return request('GET', '/api/auth/session', { token: this.token }); }
  logout() { return request('POST', '/api/auth/logout', { token: this.token }); }
  users() { return request('GET', '/api/mesh/users', { token: this.token }); }
  invite(body) { return request('POST', '/api/mesh/users', { token: this.token, body }); }
  setRole(id, role) { return request('PATCH', `/api/mesh/users/${encodeURIComponent(id)}`, { token: this.token, body: { role } }); }
  removeUser(id, devices, reassignTo) {
    const q = new URLSearchParams();
    if (devices) q.set('devices', devices);
    if (reassignTo) q.set('reassign_to', reassignTo);
    return request('DELETE', `/api/mesh/users/${encodeURIComponent(id)}?${q}`, { token: this.token });
  }
  tokens() { return request('GET', '/api/mesh/tokens', { token: this.token }); }
  createToken(name, days) { return request('POST', '/api/mesh/tokens', { token: this.token, body: { name, expires_in_days: days } }); }
  revokeToken(id) { return request('DELETE', `/api/mesh/tokens/${encodeURIComponent(id)}`, { token: this.token }); }

  devices() { return request('GET', '/api/mesh/devices', { token: this.token }); }
  createDevice(label, type) { return request('POST', '/api/mesh/devices', { token: this.token, body: { label, type } }); }
  reissueDevice(id) { return request('POST', `/api/mesh/devices/${encodeURIComponent(id)}/reissue`, { token: this.token }); }
  deleteDevice(id) { return request('DELETE', `/api/mesh/devices/${encodeURIComponent(id)}`, { token: this.token }); }
  license() { return request('GET', '/api/license/orbit-features', { token: this.token }); }
  state() { return request('GET', '/api/mesh/state', { token: this.token }); }
  peers() { return request('GET', '/api/mesh/peers', { token: this.token }); }
}
