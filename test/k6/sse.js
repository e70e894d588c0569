// k6: GET /database_events (Server-Sent Events) - live delivery and Last-Event-ID resume.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8000 test/k6/sse.js
//
// k6 has no EventSource. An SSE stream never ends, so this script reads it with a plain
// HTTP request and a timeout: when the timeout fires, k6 keeps the body received so far
// (status 0, error_code 1050 "request timeout", and a "Request Failed" warning in the log -
// expected here) and the script counts the complete `data:` messages in it. That proves
// delivery and order; it cannot time each message (load.js measures that latency with
// a browser's real EventSource).
//
// Each iteration, for a fresh session id:
//   1. opens /database_events?session_id=<id>&tail=EVENTS in the background
//      (http.asyncRequest): whether it subscribes before, during or after the upload,
//      the tail and the live stream together carry each entry once (no gap between them),
//   2. uploads SESSION_START, EVENTS-2 EVENTs and SESSION_END over /ws,
//   3. checks that the stream carried every one exactly once, with increasing ids,
//   4. reconnects with Last-Event-ID = the 2nd message's id and checks that the replay is
//      exactly the messages after it (no gap, no duplicate).
// Tokens: INGEST_TOKEN (or TOKEN) for /ws, READ_TOKEN (or TOKEN) for the stream.
// K6_PROFILE=ci: 2 VUs, one iteration each, streams held 4 s.
import http from 'k6/http';
import ws from 'k6/ws';
import crypto from 'k6/crypto';
import { check, sleep } from 'k6';
import { Counter } from 'k6/metrics';

// K6_PROFILE=ci (what the test suite runs): a few seconds, few VUs, and only the
// functional thresholds, which do not depend on how busy the machine is; unset: the
// longer run of run.sh, with the latency thresholds too.
const CI = __ENV.K6_PROFILE === 'ci';
const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8000').replace(/\/+$/, '');
const WS_URL = BASE_URL.replace(/^http/, 'ws');
const INGEST_TOKEN = __ENV.INGEST_TOKEN || __ENV.TOKEN || '';
const READ_TOKEN = __ENV.READ_TOKEN || __ENV.TOKEN || '';
const EVENTS = Math.max(3, Number(__ENV.EVENTS || 20));
const STREAM_SECONDS = Number(__ENV.STREAM_SECONDS || (CI ? 4 : 3));
// Time for the background request to subscribe before the upload, so that most
// entries travel live; the tail makes the outcome independent of it.
const SUBSCRIBE_WAIT_SECONDS = Number(__ENV.SUBSCRIBE_WAIT_SECONDS || 0.5);
const ENTRY_TYPES = ['SESSION_START', 'EVENT', 'SESSION_END'];

const sseMessages = new Counter('sse_messages');
const sseResets = new Counter('sse_resets');

// Functional only, in both profiles: a held stream ends by our timeout, as expected.
const thresholds = {
  checks: ['rate==1.0'],
  http_req_failed: ['rate==0'],
  sse_messages: ['count>0'],
  sse_resets: ['count==0'],
};

export const options = CI
  ? { vus: Number(__ENV.VUS || 2), iterations: Number(__ENV.ITERATIONS || 2), thresholds }
  : { vus: Number(__ENV.VUS || 5), duration: __ENV.DURATION || '30s', thresholds };

export function uuidv4() {
  const b = new Uint8Array(crypto.randomBytes(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// Parse an SSE body (possibly cut mid-message by the timeout) into its complete messages.
// Returns {messages: [{id, event, data}], retry, comments}; `event` is "message" unless
// the server named it (it does only for `event: reset`).
export function parseSse(body) {
  const text = String(body || '').replace(/\r\n?/g, '\n');
  const blocks = text.split('\n\n');
  blocks.pop(); // after the last blank line: an unterminated message, or nothing
  const messages = [];
  let retry = null;
  let comments = 0;
  for (const block of blocks) {
    let id = null;
    let event = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line === '') continue;
      if (line.startsWith(':')) {
        comments += 1;
        continue;
      }
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'data') data.push(value);
      else if (field === 'id') id = value;
      else if (field === 'event') event = value;
      else if (field === 'retry') retry = Number(value);
    }
    if (data.length > 0) messages.push({ id, event, data: data.join('\n') });
  }
  return { messages, retry, comments };
}

function headers(token, extra) {
  const h = Object.assign({}, extra || {});
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

function streamParams(seconds, lastEventId) {
  const extra = { Accept: 'text/event-stream' };
  if (lastEventId !== null) extra['Last-Event-ID'] = lastEventId;
  return {
    headers: headers(READ_TOKEN, extra),
    timeout: `${seconds}s`,
    tags: { name: 'database_events' },
    // The timeout is how this script ends a stream: status 0 is the expected outcome.
    responseCallback: http.expectedStatuses(0, 200),
  };
}

function upload(sessionId, events) {
  let answer = null;
  const url = `${WS_URL}/ws?sessionId=${sessionId}`;
  const res = ws.connect(url, { headers: headers(INGEST_TOKEN), tags: { name: 'ws' } }, (socket) => {
    socket.on('open', () => socket.send(JSON.stringify(events)));
    socket.on('message', (raw) => {
      answer = JSON.parse(raw);
      socket.close(1000);
    });
    socket.setTimeout(() => socket.close(1000), 10000);
  });
  return { status: res ? res.status : 0, answer };
}

function entries(messages) {
  const out = [];
  for (const m of messages) {
    if (m.event !== 'message') continue;
    try {
      out.push({ id: m.id, entry: JSON.parse(m.data) });
    } catch (e) {
      out.push({ id: m.id, entry: null });
    }
  }
  return out;
}

// Positions are decimal integers that may exceed 2^53: compare them as strings.
function greater(a, b) {
  return a.length !== b.length ? a.length > b.length : a > b;
}

function increasing(ids) {
  for (let i = 0; i < ids.length; i += 1) {
    if (!/^(0|[1-9][0-9]*)$/.test(String(ids[i]))) return false;
    if (i > 0 && !greater(String(ids[i]), String(ids[i - 1]))) return false;
  }
  return true;
}

function key(e) {
  return `${e.type}|${e.timestamp}|${e.name == null ? '' : e.name}`;
}

export default async function () {
  const sessionId = uuidv4();
  const streamUrl = `${BASE_URL}/database_events?session_id=${sessionId}&tail=${Math.min(EVENTS, 10000)}`;
  const live = http.asyncRequest('GET', streamUrl, null, streamParams(STREAM_SECONDS, null));
  sleep(SUBSCRIBE_WAIT_SECONDS);

  const now = Date.now();
  const events = [{ type: 'SESSION_START', timestamp: now, session_id: sessionId }];
  for (let i = 1; i < EVENTS - 1; i += 1) events.push({ type: 'EVENT', timestamp: now + i, name: `k6-sse-${i}` });
  events.push({ type: 'SESSION_END', timestamp: now + EVENTS, session_id: sessionId });
  const up = upload(sessionId, events);
  check(up, {
    'upload: ACK for every event': (u) => u.status === 101 && u.answer !== null && u.answer.type === 'ACK' && u.answer.accepted === EVENTS,
  });

  const res = await live;
  const parsed = parseSse(res.body);
  const got = entries(parsed.messages);
  const resets = parsed.messages.filter((m) => m.event === 'reset').length;
  sseMessages.add(got.length);
  sseResets.add(resets);

  const sent = events.map((e) => key({ type: e.type, timestamp: e.timestamp, name: e.name })).sort();
  check(res, {
    'stream: open until our timeout': (r) => r.status === 200 || r.error_code === 1050,
    'stream: retry hint sent': () => parsed.retry !== null,
  });
  check(got, {
    'stream: every stored entry exactly once': (g) => g.length === EVENTS,
    'stream: ids strictly increasing integers': (g) => increasing(g.map((x) => x.id)),
    'stream: only this session (filter)': (g) => g.every((x) => x.entry !== null && x.entry.session_id === sessionId),
    'stream: types are SESSION_START, EVENT, SESSION_END': (g) =>
      g.every((x) => x.entry !== null && ENTRY_TYPES.indexOf(x.entry.type) >= 0),
    'stream: the entries uploaded, as uploaded': (g) =>
      JSON.stringify(g.map((x) => (x.entry === null ? '' : key(x.entry))).sort()) === JSON.stringify(sent),
  });

  if (got.length < 2) return;
  // Resume after the 2nd message: the replay must be exactly what followed it.
  const resumeFrom = got[1].id;
  const replay = http.get(streamUrl, streamParams(Math.max(1, STREAM_SECONDS / 2), resumeFrom));
  const again = entries(parseSse(replay.body).messages);
  const wanted = got.slice(2).map((x) => x.id);
  check(again, {
    'resume: Last-Event-ID replays what followed, no gap, no duplicate': (a) =>
      JSON.stringify(a.map((x) => x.id)) === JSON.stringify(wanted),
  });
}
