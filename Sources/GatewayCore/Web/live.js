// The live channel: `GET /api/mesh/events` read as Server-Sent Events. It is read with `fetch`, not
// `EventSource`, so that a bearer token travels in the Authorization header as on every other call
// (never in a URL). docs/web.md, "Live updates", describes it.
import { ApiError } from './api.js';

/** Reads an event stream's text, chunk by chunk, into `{event, data}` objects (the SSE format). */
export class EventStreamParser {
  constructor(onEvent, onRetry = () => {}) {
    this.onEvent = onEvent;
    this.onRetry = onRetry;
    this.buffer = '';
    this.event = '';
    this.data = [];
  }

  push(text) {
    this.buffer += text;
    for (;;) {
      const i = this.buffer.indexOf('\n');
      if (i < 0) break;
      let line = this.buffer.slice(0, i);
      this.buffer = this.buffer.slice(i + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      this.line(line);
    }
  }

  line(line) {
    if (line === '') {
      if (this.data.length > 0) this.onEvent({ event: this.event || 'message', data: this.data.join('\n') });
      this.event = '';
      this.data = [];
      return;
    }
    if (line.startsWith(':')) return;   // a comment: the heartbeat
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'retry' && /^\d+$/.test(value)) this.onRetry(Number(value));
  }
}

/**
 * The page's live channel, for one page of the device list (`query`, as `GET /api/mesh/devices`
 * takes it; `setQuery` opens it again for another). `handlers.onOpen()` when a stream delivers its first event,
 * `handlers.onEvent(name, data)` for each event, `handlers.onFallback()` when the channel cannot be
 * opened (the page polls until it can), `handlers.onRefused(error)` when the server refuses the
 * credential (an ApiError; the channel stops).
 */
export class LiveChannel {
  constructor(token, query, handlers) {
    this.token = token;
    this.query = query;   // the device list's query: the page and filters the `devices` event carries
    this.handlers = handlers;
    this.stopped = true;
    this.controller = null;
    this.failures = 0;
    this.timer = null;
    this.watchdog = null;
    this.silenceMs = 45000;   // three heartbeats of the server's default; the stream's `retry:` updates it
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.watchdog);
    if (this.controller) this.controller.abort();
  }

  /** Opens the channel again for another page or other filters; the old stream is dropped. */
  setQuery(query) {
    this.query = query;
    if (this.stopped) return;
    const old = this.controller;
    clearTimeout(this.timer);
    this.connect();
    if (old) old.abort();
  }

  /** A stream that stays silent past three heartbeats is dead (a lost connection): open a new one. */
  arm(controller) {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => controller.abort(), this.silenceMs);
  }

  async connect() {
    if (this.stopped) return;
    const controller = new AbortController();
    this.controller = controller;
    let opened = false;
    let refused = null;
    const began = Date.now();
    try {
      const headers = { Accept: 'text/event-stream' };
      if (this.token) headers.Authorization = `Bearer ${this.token}`;
      this.arm(controller);
      const response = await fetch(`/api/mesh/events${this.query}`, {
        headers,
        cache: 'no-store',
        credentials: this.token ? 'omit' : 'same-origin',
        referrerPolicy: 'no-referrer',
        signal: controller.signal,
      });
      const type = response.headers.get('Content-Type') || '';
      if (!response.ok || !response.body || !type.startsWith('text/event-stream')) {
        let body = null;
        try { body = await response.json(); } catch { body = null; }
        throw new ApiError(response.status, body, response.headers.get('Retry-After'));
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      const parser = new EventStreamParser((e) => {
        if (this.controller !== controller) return;   // a stream replaced by setQuery
        let data;
        try { data = JSON.parse(e.data); } catch { return; }
        if (e.event === 'ended') {
          refused = new ApiError(Number(data.status) || 0, data, null);
          return;
        }
        if (!opened) {
          opened = true;
          this.failures = 0;
          this.handlers.onOpen();
        }
        this.handlers.onEvent(e.event, data);
      }, (ms) => { this.silenceMs = Math.max(5000, 3 * ms); });
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        this.arm(controller);
        parser.push(decoder.decode(value, { stream: true }));
      }
    } catch (error) {
      if (this.stopped || this.controller !== controller) return;
      if (error instanceof ApiError) refused = error;
    } finally {
      if (this.controller === controller) clearTimeout(this.watchdog);
    }
    // Stopped, or replaced by a stream for another query (setQuery).
    if (this.stopped || this.controller !== controller) return;
    if (refused && refused.status === 401) {
      this.stopped = true;
      this.handlers.onRefused(refused);
      return;
    }
    if (opened && !refused && Date.now() - began > 5000) {
      // The stream ended after it worked (its lifetime, a restarted gateway, a dropped connection):
      // a new one starts with a fresh list, so nothing in between is lost.
      this.timer = setTimeout(() => this.connect(), 0);
      return;
    }
    this.failures++;
    this.handlers.onFallback(refused);
    const delay = Math.min(30000, 1000 * 2 ** Math.min(this.failures, 5));
    this.timer = setTimeout(() => this.connect(), delay);
  }
}
