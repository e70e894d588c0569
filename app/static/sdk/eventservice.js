// eventservice browser uploader: exactly-once session events from a web page.
// An ES module, no dependencies, no build step. API and guarantees: docs/uploader-browser.md.
//
// Three parts, each usable alone:
//   BatchQueue      sealed batches waiting for their ACK, in localStorage or memory;
//   SocketTransport one WebSocket to /ws that reconnects with backoff and full jitter;
//   sendBeacons     the unload-time transport (POST /batch), which cannot report an answer,
//                   so nothing it sends leaves the queue: only an ACK removes a batch.
// createUploader() joins them; claimLeftovers() resends what pages that are gone left.

/** Every default in one place; the names carry their unit. */
export const DEFAULTS = Object.freeze({
  flushEvents: 50, // a batch is sealed at this many events...
  flushMs: 1000, // ...or this long after its first event
  storage: "local", // "local" | "memory": where sealed batches wait for their ACK
  maxQueueEvents: 10000, // beyond it track() refuses through onError
  maxBatchBytes: 512 * 1024, // sealed before a frame could pass the server's 1 MiB
  maxInflightFrames: 4, // frames sent on the socket and not yet answered
  minReconnectDelayMs: 250, // backoff: full jitter between this...
  maxReconnectDelayMs: 30000, // ...and the doubling cap, at most this
  reconnectGrowFactor: 2,
  connectTimeoutMs: 10000, // a handshake that hangs is abandoned and retried
  beaconQuotaBytes: 60000, // the browser allows ~64 KB of beacons in flight
  maxNameChars: 255, // the server's rules, checked before an event costs its neighbours
  maxDataBytes: 16384,
  maxDataDepth: 64, // nesting levels, the data object itself being level 1
});

const PREFIX = "eventservice:b:"; // localStorage key: PREFIX + session + ":" + seq + ":" + count + ":" + batch_id
const SESSION_KEY = "eventservice:sessionId"; // sessionStorage: one session per tab
const LOCK_PREFIX = "eventservice:session:"; // Web Lock held by a live uploader for its session
const CLAIM_LOCK = "eventservice:claim"; // one tab at a time resends leftovers
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const RETRY_CODES = new Set(["unavailable", "rate_limited"]);
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

const UTF8 = new TextEncoder();

let seqCounter = 0;

/** A random UUID, also outside secure contexts where crypto.randomUUID is missing. */
export function uuid4() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function refusal(error, message, details = [], batchId = null) {
  return { error, message, details, batch_id: batchId };
}

/**
 * The server's field rules for one event (name, data), so a bad event is refused alone.
 * Returns null when fine, else a refusal.
 */
export function checkEvent(name, data, opts = DEFAULTS) {
  const bad = (field, message) => refusal("invalid_event", `event refused: ${field} ${message}`, [{ index: 0, field, message }]);
  if (name !== undefined) {
    if (typeof name !== "string") return bad("name", "must be a string");
    const chars = [...name].length; // code points, as the server counts
    if (chars < 1 || chars > opts.maxNameChars) return bad("name", `must be 1-${opts.maxNameChars} characters, got ${chars}`);
    if (name.includes("\u0000")) return bad("name", "must not contain \\u0000");
    if (LONE_SURROGATE.test(name)) return bad("name", "must not contain a lone surrogate");
  }
  if (data === undefined) return null;
  if (data === null || typeof data !== "object" || Array.isArray(data) || Object.getPrototypeOf(data) !== Object.prototype) {
    return bad("data", "must be a plain object");
  }
  let problem = null;
  let json;
  try {
    json = JSON.stringify(data, (key, value) => {
      if (problem) return undefined;
      for (const s of typeof value === "string" ? [key, value] : [key]) {
        if (s.includes("\u0000")) problem = "must not contain \\u0000";
        else if (LONE_SURROGATE.test(s)) problem = "must not contain a lone surrogate";
      }
      if (typeof value === "number" && !Number.isFinite(value)) problem = "must not contain NaN or Infinity";
      return value;
    });
  } catch (exc) {
    return bad("data", `cannot be encoded as JSON (${exc.message})`);
  }
  if (problem) return bad("data", problem);
  const bytes = UTF8.encode(json).length;
  if (bytes > opts.maxDataBytes) return bad("data", `is ${bytes} bytes as JSON, at most ${opts.maxDataBytes}`);
  const depth = dataDepth(JSON.parse(json));
  if (depth > opts.maxDataDepth) return bad("data", `is nested ${depth} levels deep, at most ${opts.maxDataDepth}`);
  return null;
}

/** Nesting depth of a JSON value, counted like the server (iterative: no stack to exhaust). */
function dataDepth(value) {
  let deepest = 0;
  const stack = [[value, 1]];
  while (stack.length) {
    const [node, level] = stack.pop();
    if (node !== null && typeof node === "object") {
      deepest = Math.max(deepest, level);
      for (const child of Array.isArray(node) ? node : Object.values(node)) stack.push([child, level + 1]);
    }
  }
  return deepest;
}

/** Where sealed batches wait: localStorage (survives the page) or a Map (lives with it). */
export function openStorage(kind) {
  if (kind === "local") {
    try {
      const ls = globalThis.localStorage;
      ls.setItem(PREFIX + "probe", "1");
      ls.removeItem(PREFIX + "probe");
      return {
        durable: true,
        put: (k, v) => ls.setItem(k, v),
        get: (k) => ls.getItem(k),
        drop: (k) => ls.removeItem(k),
        keys: () => Object.keys(ls).filter((k) => k.startsWith(PREFIX)),
      };
    } catch {
      // private mode or storage disabled: memory, as documented
    }
  }
  const map = new Map();
  return { durable: false, put: (k, v) => map.set(k, v), get: (k) => map.get(k) ?? null, drop: (k) => map.delete(k), keys: () => [...map.keys()] };
}

/** Parse a stored key into {session, seq, count, id}, or null for a foreign key. */
function parseKey(key) {
  const m = /^eventservice:b:([^:]+):(\d+):(\d+):(.+)$/.exec(key);
  return m ? { key, session: m[1], seq: Number(m[2]), count: Number(m[3]), id: m[4] } : null;
}

/** The sealed batches of one session in seal order; each is removed only by its ACK or an ERROR. */
export class BatchQueue {
  constructor(sessionId, store) {
    this.sessionId = sessionId;
    this.store = store;
    this.batches = []; // {id, key, count, frame}
    this.events = 0;
    for (const p of store.keys().map(parseKey).filter((x) => x && x.session === sessionId).sort((a, b) => a.seq - b.seq)) {
      const frame = store.get(p.key);
      if (frame !== null) this._push({ id: p.id, key: p.key, count: p.count, frame });
    }
  }

  _push(batch) {
    this.batches.push(batch);
    this.events += batch.count;
  }

  /** Seal events into a batch with a fresh batch_id; stored before it is ever sent. */
  seal(events) {
    const id = uuid4();
    const seq = Date.now() * 1000 + (seqCounter++ % 1000);
    const key = `${PREFIX}${this.sessionId}:${seq}:${events.length}:${id}`;
    const frame = `{"batch_id":"${id}","events":${JSON.stringify(events)}}`;
    let stored = true;
    try {
      this.store.put(key, frame);
    } catch {
      stored = false; // quota exceeded: the batch still waits in memory and is sent as usual
    }
    const batch = { id, key, count: events.length, frame, stored };
    this._push(batch);
    return batch;
  }

  get(id) {
    return this.batches.find((b) => b.id === id);
  }

  remove(id) {
    const i = this.batches.findIndex((b) => b.id === id);
    if (i < 0) return null;
    const [batch] = this.batches.splice(i, 1);
    this.events -= batch.count;
    this.store.drop(batch.key);
    return batch;
  }
}

/** Reconnect delay: full jitter over [min, min·grow^attempt], capped. */
export function backoffMs(attempt, opts = DEFAULTS) {
  const cap = Math.min(opts.maxReconnectDelayMs, opts.minReconnectDelayMs * opts.reconnectGrowFactor ** attempt);
  return opts.minReconnectDelayMs + Math.random() * (cap - opts.minReconnectDelayMs);
}

/** One WebSocket that comes back: backoff with full jitter, reset by a good answer. */
export class SocketTransport {
  constructor(url, opts, handlers) {
    this.url = url;
    this.opts = opts;
    this.handlers = handlers; // {open(), message(obj), close(code)}
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.stopped = true;
  }

  get open() {
    return this.ws !== null && this.ws.readyState === 1;
  }

  start() {
    this.stopped = false;
    if (!this.ws && !this.timer) this._connect();
  }

  /** A good answer arrived: the next outage starts its backoff from the bottom. */
  healthy() {
    this.attempt = 0;
  }

  /** Connect now (the network came back) instead of waiting out the backoff. */
  now() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.timer);
    this.timer = null;
    this._connect();
  }

  /** The network went away: close now rather than wait for TCP to notice; `online` reconnects. */
  drop() {
    if (this.ws) this.ws.close();
  }

  _connect() {
    this.timer = null;
    if (this.stopped) return;
    if (globalThis.navigator && navigator.onLine === false) return; // the `online` event calls now()
    const ws = new WebSocket(this.url);
    this.ws = ws;
    const hung = setTimeout(() => ws.close(), this.opts.connectTimeoutMs);
    ws.onopen = () => {
      clearTimeout(hung);
      this.handlers.open();
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      this.handlers.message(msg);
    };
    ws.onclose = (ev) => {
      clearTimeout(hung);
      if (this.ws !== ws) return;
      this.ws = null;
      this.handlers.close(ev.code);
      if (!this.stopped) this.timer = setTimeout(() => this._connect(), backoffMs(this.attempt++, this.opts));
    };
  }

  send(text) {
    this.ws.send(text);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.close(1000);
      this.handlers.close();
    }
  }
}

function batchUrl(endpoint, sessionId, token) {
  let url = `${endpoint}/batch?sessionId=${encodeURIComponent(sessionId)}`;
  if (token) url += `&token=${encodeURIComponent(token)}`;
  return url;
}

/** The unload-time transport: as many frames as the beacon quota allows; returns how many. */
export function sendBeacons(url, frames, quotaBytes) {
  if (!globalThis.navigator || typeof navigator.sendBeacon !== "function") return 0;
  let used = 0;
  let sent = 0;
  for (const frame of frames) {
    const bytes = UTF8.encode(frame).length;
    if (used + bytes > quotaBytes) break;
    // A string is sent as text/plain: a CORS-simple request, no preflight from a closing page.
    if (!navigator.sendBeacon(url, frame)) break;
    used += bytes;
    sent++;
  }
  return sent;
}

/**
 * Resend the batches of pages that are gone (any tab, any session of this origin): under one
 * origin-wide lock, those whose session lock no live uploader holds, by POST /batch; each is
 * deleted on its ACK (or an ERROR, reported through onError) and kept on any other outcome.
 */
export async function claimLeftovers(endpoint, token, store, onError) {
  const locks = globalThis.navigator && navigator.locks;
  if (!locks || !store.durable) return 0;
  return locks.request(CLAIM_LOCK, async () => {
    const held = new Set((await locks.query()).held.map((l) => l.name));
    const orphans = store
      .keys()
      .map(parseKey)
      .filter((p) => p && !held.has(LOCK_PREFIX + p.session))
      .sort((a, b) => a.seq - b.seq);
    let resent = 0;
    for (const p of orphans) {
      const frame = store.get(p.key);
      if (frame === null) continue;
      let response;
      try {
        response = await fetch(batchUrl(endpoint, p.session, token), { method: "POST", body: frame, headers: { "Content-Type": "text/plain" } });
      } catch {
        return resent; // offline or the service is down: the next uploader tries again
      }
      const answer = await response.json().catch(() => ({}));
      if (response.ok && answer.type === "ACK") {
        store.drop(p.key);
        resent++;
      } else if (response.status === 400 || response.status === 413) {
        store.drop(p.key);
        onError(refusal(answer.error ?? "invalid_batch", answer.message ?? `HTTP ${response.status}`, answer.details ?? [], p.id));
      } else {
        return resent; // 401/403/429/503: keep everything for a later try
      }
    }
    return resent;
  });
}

function tabSessionId() {
  try {
    const known = sessionStorage.getItem(SESSION_KEY);
    if (known) return known;
    const id = uuid4();
    sessionStorage.setItem(SESSION_KEY, id);
    return id;
  } catch {
    return uuid4();
  }
}

/** The uploader of the SPEC: start/track/end/flush/pending/sessionId/close. */
export function createUploader(options = {}) {
  const opts = { ...DEFAULTS, ...options };
  const endpoint = (opts.endpoint ?? new URL(import.meta.url).origin).replace(/\/+$/, "");
  const token = opts.token;
  const onError = typeof opts.onError === "function" ? opts.onError : () => {};
  const sessionId = String(opts.sessionId ?? tabSessionId()).toLowerCase();
  if (!UUID.test(sessionId)) throw new TypeError(`eventservice: sessionId must be a UUID, got ${JSON.stringify(opts.sessionId)}`);
  const store = openStorage(opts.storage);
  const queue = new BatchQueue(sessionId, store);
  const inflight = new Map(); // batch_id -> batch, sent on the current socket
  const sentAs = new Map(); // frame number on the current socket -> batch_id (an answer may lack the id)
  let frames = 0;
  const retryAt = new Map(); // batch_id -> time before which it is not resent
  const suspects = new Set(); // batch_ids in flight at a close 1009 (a frame too large): sent alone until answered
  const waiters = []; // flush(): {ids:Set, resolve}
  let open = []; // the batch being filled
  let openBytes = 0;
  let sealTimer = null;
  let retryTimer = null;
  let closed = false;
  let releaseLock = null;

  let wsUrl = `${endpoint.replace(/^http/, "ws")}/ws?sessionId=${encodeURIComponent(sessionId)}`;
  if (token) wsUrl += `&token=${encodeURIComponent(token)}`;
  const socket = new SocketTransport(wsUrl, opts, {
    open: () => {
      frames = 0; // the server counts a connection's frames from 1
      pump();
    },
    message: answered,
    close: (code) => {
      if (code === 1009) frameTooLarge();
      inflight.clear(); // everything unanswered is resent, in order, on the next socket
      sentAs.clear();
    },
  });

  function sealOpen() {
    clearTimeout(sealTimer);
    sealTimer = null;
    if (open.length === 0) return;
    const batch = queue.seal(open);
    open = [];
    openBytes = 0;
    if (!batch.stored && store.durable) {
      // A warning, after the uploader's state is whole: a handler that tracks or throws
      // must not see (or break) a half-sealed batch.
      const warning = refusal(
        "storage_full",
        `localStorage refused the batch (quota): its ${batch.count} events are sent as usual but wait in memory only, so closing the page before their ACK can lose them`,
        [],
        batch.id,
      );
      queueMicrotask(() => {
        try {
          onError(warning);
        } catch (exc) {
          console.error("eventservice: onError threw", exc);
        }
      });
    }
  }

  /**
   * The server closed with 1009: a frame in flight was over its MAX_FRAME_BYTES, and it
   * never read that frame. Alone in flight, that batch is the one: no resend can pass, so
   * it is dropped and reported, or it would block every batch behind it for good. With
   * several in flight, each of them is sent alone until answered, to find it.
   */
  function frameTooLarge() {
    if (inflight.size !== 1) {
      for (const id of inflight.keys()) suspects.add(id);
      return;
    }
    const [[id, batch]] = inflight;
    suspects.delete(id);
    retryAt.delete(id);
    queue.remove(id);
    settle();
    try {
      onError(
        refusal(
          "too_large",
          `the batch of ${batch.count} events is larger than the server takes in one frame (its MAX_FRAME_BYTES): dropped; set maxBatchBytes below that limit`,
          [],
          id,
        ),
      );
    } catch (exc) {
      console.error("eventservice: onError threw", exc);
    }
  }

  function pump() {
    if (!socket.open) return;
    const now = Date.now();
    let nextRetry = Infinity;
    const most = suspects.size > 0 ? 1 : opts.maxInflightFrames;
    for (const batch of queue.batches) {
      if (inflight.size >= most) return;
      if (inflight.has(batch.id)) continue;
      const at = retryAt.get(batch.id) ?? 0;
      if (at > now) {
        nextRetry = Math.min(nextRetry, at);
        continue;
      }
      inflight.set(batch.id, batch);
      sentAs.set(++frames, batch.id);
      socket.send(batch.frame);
    }
    if (nextRetry < Infinity && !retryTimer) {
      retryTimer = setTimeout(() => {
        retryTimer = null;
        pump();
      }, nextRetry - now);
    }
  }

  function settle() {
    for (let i = waiters.length - 1; i >= 0; i--) {
      const w = waiters[i];
      for (const id of w.ids) if (!queue.get(id)) w.ids.delete(id);
      if (w.ids.size === 0) {
        waiters.splice(i, 1);
        w.resolve();
      }
    }
  }

  function answered(msg) {
    // By frame number: a rate_limited answer comes before the frame is parsed, without its batch_id.
    const id = sentAs.get(msg.batch) ?? msg.batch_id;
    sentAs.delete(msg.batch);
    if (typeof id !== "string" || !inflight.has(id)) return;
    inflight.delete(id);
    suspects.delete(id);
    if (msg.type === "ACK") {
      socket.healthy();
      retryAt.delete(id);
      queue.remove(id);
    } else if (RETRY_CODES.has(msg.error)) {
      const delay = msg.retry_after_ms ?? backoffMs(1, opts);
      retryAt.set(id, Date.now() + delay);
    } else {
      retryAt.delete(id);
      queue.remove(id);
      onError(refusal(msg.error, msg.message, msg.details ?? [], id));
    }
    settle();
    pump();
  }

  function add(type, name, data) {
    if (closed) {
      onError(refusal("closed", "the uploader is closed"));
      return false;
    }
    const problem = checkEvent(name, data, opts);
    if (problem) {
      onError(problem);
      return false;
    }
    if (queue.events + open.length >= opts.maxQueueEvents) {
      onError(refusal("queue_full", `${opts.maxQueueEvents} events wait for their ACK already (maxQueueEvents); event refused`));
      return false;
    }
    const event = { type, timestamp: Date.now() };
    if (name !== undefined) event.name = name;
    if (data !== undefined) event.data = data;
    const bytes = 64 + (name ? name.length * 3 : 0) + (data === undefined ? 0 : JSON.stringify(data).length * 3);
    if (open.length > 0 && openBytes + bytes > opts.maxBatchBytes) sealOpen();
    open.push(event);
    openBytes += bytes;
    if (open.length >= opts.flushEvents) {
      sealOpen();
      pump();
    } else if (!sealTimer) {
      sealTimer = setTimeout(() => {
        sealOpen();
        pump();
      }, opts.flushMs);
    }
    return true;
  }

  function hidden() {
    sealOpen();
    const frames = queue.batches.map((b) => b.frame);
    sendBeacons(batchUrl(endpoint, sessionId, token), frames, opts.beaconQuotaBytes);
  }

  const listeners = [
    [globalThis, "online", () => socket.now()],
    [globalThis, "offline", () => socket.drop()],
    [document, "visibilitychange", () => document.visibilityState === "hidden" && hidden()],
    [
      globalThis,
      "pagehide",
      (ev) => {
        hidden();
        if (ev.persisted) socket.stop(); // into the back/forward cache: no socket held there
      },
    ],
    [
      globalThis,
      "pageshow",
      (ev) => {
        if (ev.persisted && !closed) {
          socket.start();
          pump();
        }
      },
    ],
  ];
  for (const [target, type, fn] of listeners) target.addEventListener(type, fn);

  const locks = globalThis.navigator && navigator.locks;
  if (locks) {
    // Held for the uploader's lifetime: a claimer in another tab leaves this session's batches alone.
    locks
      .request(LOCK_PREFIX + sessionId, () => new Promise((resolve) => (releaseLock = resolve)))
      .catch(() => {});
    claimLeftovers(endpoint, token, openStorage("local"), onError).catch(() => {});
  }
  socket.start();

  return {
    get sessionId() {
      return sessionId;
    },
    get pending() {
      return queue.events + open.length;
    },
    start: (data) => add("SESSION_START", undefined, data),
    track: (name, data) => add("EVENT", name === undefined ? null : name, data),
    end: (data) => add("SESSION_END", undefined, data),
    /** Resolves once every event tracked before the call is ACKed (or refused by an ERROR). */
    flush() {
      sealOpen();
      pump();
      const ids = new Set(queue.batches.map((b) => b.id));
      if (ids.size === 0) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ ids, resolve }));
    },
    /** Stop sending; sealed batches stay in storage for the next uploader of the origin. */
    close() {
      if (closed) return;
      sealOpen();
      closed = true;
      socket.stop();
      clearTimeout(retryTimer);
      for (const [target, type, fn] of listeners) target.removeEventListener(type, fn);
      if (releaseLock) releaseLock();
    },
  };
}
