// k6: the three bench/ scenarios at once - WebSocket ingest, session lookups, SSE readers -
// with ramping stages, thresholds, and an ingest-to-SSE latency Trend.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8000 test/k6/load.js
//   SSE_LATENCY=1 k6 run test/k6/load.js        # + ingest-to-SSE latency in Chromium
//
// Scenarios (all share one ramp: RAMP_SECONDS up, HOLD_SECONDS steady, DOWN_SECONDS down):
//   ingest   ramping-vus, up to INGEST_VUS WebSocket clients. Each iteration opens
//            /ws?sessionId=<one of SESSIONS sessions>, sends BATCHES_PER_CONNECTION
//            frames of BATCH_SIZE events with up to INFLIGHT frames awaiting their ACK,
//            and records ws_ack_latency (send -> ACK, so after COMMIT). The first event of
//            every frame is a probe named "k6_probe" whose timestamp is the send time.
//   lookup   ramping-arrival-rate, up to LOOKUP_RPS GET /session/<id>?limit=LOOKUP_LIMIT.
//   sse      SSE_VUS readers of /database_events?SSE_FILTER (default: the probes only,
//            so k6 does not buffer the whole firehose). k6 has no EventSource: each
//            reader holds a request for SSE_HOLD_SECONDS, counts the complete messages
//            in what arrived (sse_messages), and reconnects with Last-Event-ID, so every
//            reconnect also exercises resume. Expect one "Request Failed ... request
//            timeout" warning per hold: that timeout is how a reader ends its stream.
//   latency  only with SSE_LATENCY=1 (needs Chromium: k6's browser module). A page
//            opens a real EventSource on the probes and records, for each one,
//            receive time - send time into the ingest_to_sse_latency Trend: WebSocket
//            send, validation, COMMIT, NOTIFY, fan-out and delivery to a browser.
//            k6 and Chromium run on one machine, so they share a clock.
// Tokens: INGEST_TOKEN (or TOKEN) for /ws, READ_TOKEN (or TOKEN) for reads.
// K6_PROFILE=ci (what the test suite runs): the same scenarios scaled down to a few
// seconds and a few VUs, and only the functional thresholds (every check passes, no
// failed request or batch, no SSE reset), which do not depend on how busy the machine
// is; the readers then start with ?tail=SSE_TAIL so that they see probes whenever
// they connect. Unset: the longer run of run.sh with the latency thresholds.
import http from 'k6/http';
import ws from 'k6/ws';
import crypto from 'k6/crypto';
import { browser } from 'k6/browser';
import { check, fail } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';

const env = (name, fallback) => (__ENV[name] === undefined || __ENV[name] === '' ? fallback : __ENV[name]);
const num = (name, fallback) => Number(env(name, fallback));
const CI = __ENV.K6_PROFILE === 'ci';
const byProfile = (name, ci, full) => num(name, CI ? ci : full);

const BASE_URL = env('BASE_URL', 'http://127.0.0.1:8000').replace(/\/+$/, '');
const WS_URL = BASE_URL.replace(/^http/, 'ws');
const INGEST_TOKEN = env('INGEST_TOKEN', env('TOKEN', ''));
const READ_TOKEN = env('READ_TOKEN', env('TOKEN', ''));

const RAMP_SECONDS = byProfile('RAMP_SECONDS', 1, 30);
const HOLD_SECONDS = byProfile('HOLD_SECONDS', 3, 60);
const DOWN_SECONDS = byProfile('DOWN_SECONDS', 1, 10);
const TOTAL_SECONDS = RAMP_SECONDS + HOLD_SECONDS + DOWN_SECONDS;

const INGEST_VUS = byProfile('INGEST_VUS', 2, 20);
const SESSIONS = byProfile('SESSIONS', 20, 1000);
const BATCH_SIZE = Math.max(1, byProfile('BATCH_SIZE', 20, 100));
const BATCHES_PER_CONNECTION = byProfile('BATCHES_PER_CONNECTION', 10, 50);
const INFLIGHT = Math.max(1, num('INFLIGHT', 4));
const CONNECTION_TIMEOUT_MS = num('CONNECTION_TIMEOUT_MS', 60000);

const LOOKUP_RPS = byProfile('LOOKUP_RPS', 10, 200);
const LOOKUP_LIMIT = num('LOOKUP_LIMIT', 1000);

const SSE_VUS = byProfile('SSE_VUS', 2, 50);
const SSE_HOLD_SECONDS = byProfile('SSE_HOLD_SECONDS', 2, 20);
const SSE_FILTER = env('SSE_FILTER', 'name=k6_probe');
const SSE_TAIL = byProfile('SSE_TAIL', 100, 0); // entries a fresh reader starts with

const SSE_LATENCY = ['1', 'true', 'yes', 'on'].indexOf(String(env('SSE_LATENCY', '')).toLowerCase()) >= 0;
const SSE_LATENCY_WINDOW_SECONDS = num('SSE_LATENCY_WINDOW_SECONDS', 10);

const PROBE = 'k6_probe';
const NAMES = ['page_view', 'click', 'scroll', 'input', 'purchase'];

const ackLatency = new Trend('ws_ack_latency', true);
const batchErrors = new Rate('ws_batch_errors');
const eventsAcked = new Counter('ws_events_acked');
const sseMessages = new Counter('sse_messages');
const sseResets = new Counter('sse_resets');
const sseLatencyTrend = new Trend('ingest_to_sse_latency', true);

const stages = (target) => [
  { duration: `${RAMP_SECONDS}s`, target },
  { duration: `${HOLD_SECONDS}s`, target },
  { duration: `${DOWN_SECONDS}s`, target: 0 },
];

const scenarios = {
  ingest: {
    executor: 'ramping-vus',
    exec: 'ingest',
    startVUs: 0,
    stages: stages(INGEST_VUS),
    gracefulRampDown: '15s',
  },
  lookup: {
    executor: 'ramping-arrival-rate',
    exec: 'lookup',
    startRate: 0,
    timeUnit: '1s',
    preAllocatedVUs: Math.max(1, Math.ceil(LOOKUP_RPS / 10)),
    maxVUs: Math.max(2, LOOKUP_RPS),
    stages: stages(LOOKUP_RPS),
  },
  sse: {
    executor: 'constant-vus',
    exec: 'sseReader',
    vus: SSE_VUS,
    duration: `${TOTAL_SECONDS}s`,
    gracefulStop: `${SSE_HOLD_SECONDS + 10}s`,
  },
};

const functional = {
  checks: ['rate==1.0'],
  http_req_failed: ['rate==0'],
  ws_batch_errors: ['rate==0'],
  ws_events_acked: ['count>0'],
  sse_messages: ['count>0'],
  sse_resets: ['count==0'],
};
// Under full load a few slow answers are tolerated; the latencies are the point.
const underLoad = {
  checks: ['rate>0.99'],
  ws_ack_latency: [`p(99)<${num('ACK_P99_MS', 100)}`],
  ws_batch_errors: ['rate<0.01'],
  ws_events_acked: ['count>0'],
  'http_req_duration{scenario:lookup}': [`p(99)<${num('LOOKUP_P99_MS', 50)}`],
  'http_req_failed{scenario:lookup}': ['rate<0.01'],
  sse_messages: ['count>0'],
  sse_resets: ['count==0'],
};
const thresholds = CI ? functional : underLoad;

if (SSE_LATENCY) {
  scenarios.latency = {
    executor: 'constant-vus',
    exec: 'sseLatency',
    vus: 1,
    duration: `${TOTAL_SECONDS}s`,
    gracefulStop: `${SSE_LATENCY_WINDOW_SECONDS + 10}s`,
    options: { browser: { type: 'chromium' } },
  };
  if (!CI) thresholds.ingest_to_sse_latency = [`p(99)<${num('SSE_P99_MS', 250)}`];
}

export const options = { scenarios, thresholds };

function randomHex(bytes) {
  return Array.from(new Uint8Array(crypto.randomBytes(bytes)), (x) => x.toString(16).padStart(2, '0')).join('');
}

// Session i of this run: a valid UUID (version 4, variant 8) unique to the run.
export function sessionUuid(runId, i) {
  return `${runId}-0000-4000-8000-${i.toString(16).padStart(12, '0')}`;
}

function headers(token, extra) {
  const h = Object.assign({}, extra || {});
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

export function setup() {
  const res = http.get(`${BASE_URL}/healthcheck`);
  if (res.status !== 200) fail(`${BASE_URL}/healthcheck answered ${res.status}: is the service running?`);
  return { runId: randomHex(4) };
}

// Frame n of a connection: a probe first (its timestamp is the send time), then
// BATCH_SIZE-1 EVENTs; the first frame of a connection also (re)starts the session.
export function makeBatch(sessionId, n) {
  const now = Date.now();
  const events = [{ type: 'EVENT', timestamp: now, name: PROBE }];
  if (n === 1 && BATCH_SIZE > 1) events.push({ type: 'SESSION_START', timestamp: now, session_id: sessionId });
  for (let i = events.length; i < BATCH_SIZE; i += 1) {
    const e = { type: 'EVENT', timestamp: now, name: NAMES[i % NAMES.length] };
    if (i % 10 === 0) e.data = { seq: n, i, path: '/k6' };
    events.push(e);
  }
  return events;
}

export function ingest(data) {
  const sessionId = sessionUuid(data.runId, (__VU * 7919 + __ITER) % SESSIONS);
  const sentAt = {};
  let sent = 0;
  let answered = 0;
  const url = `${WS_URL}/ws?sessionId=${sessionId}`;
  const res = ws.connect(url, { headers: headers(INGEST_TOKEN), tags: { name: 'ws' } }, (socket) => {
    const pump = () => {
      while (sent < BATCHES_PER_CONNECTION && sent - answered < INFLIGHT) {
        sent += 1;
        sentAt[sent] = Date.now();
        socket.send(JSON.stringify(makeBatch(sessionId, sent)));
      }
    };
    socket.on('open', pump);
    socket.on('message', (raw) => {
      answered += 1;
      let m = null;
      try {
        m = JSON.parse(raw);
      } catch (e) {
        m = null;
      }
      // Answers come in frame order: the n-th answer is for frame n.
      const ok = m !== null && m.type === 'ACK' && m.batch === answered && m.accepted === BATCH_SIZE;
      batchErrors.add(!ok);
      if (ok) {
        ackLatency.add(Date.now() - sentAt[m.batch]);
        eventsAcked.add(m.accepted);
      } else if (m !== null && m.type === 'ERROR') {
        console.warn(`batch ${m.batch}: ${m.error}: ${m.message}`);
      }
      if (answered >= BATCHES_PER_CONNECTION) socket.close(1000);
      else pump();
    });
    socket.on('error', (e) => console.warn(`websocket error: ${e.error()}`));
    socket.setTimeout(() => socket.close(1000), CONNECTION_TIMEOUT_MS);
  });
  for (let i = answered; i < sent; i += 1) batchErrors.add(true); // sent, never answered
  check(res, { 'ingest: handshake 101': (r) => r !== null && r !== undefined && r.status === 101 });
  check(answered, { 'ingest: every frame answered': (n) => n === BATCHES_PER_CONNECTION });
}

export function lookup(data) {
  const sessionId = sessionUuid(data.runId, Math.floor(Math.random() * SESSIONS));
  const res = http.get(`${BASE_URL}/session/${sessionId}?limit=${LOOKUP_LIMIT}`, {
    headers: headers(READ_TOKEN),
    tags: { name: 'session' },
    // A session nobody has uploaded to yet (early in the ramp) is a correct 404.
    responseCallback: http.expectedStatuses(200, 404),
  });
  check(res, { 'lookup: 200, or 404 before its first upload': (r) => r.status === 200 || r.status === 404 });
}

// Parse an SSE body (possibly cut mid-message by the timeout) into its complete messages.
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

let lastEventId = null; // per VU: where this reader's next connection resumes

export function sseReader() {
  const extra = { Accept: 'text/event-stream' };
  if (lastEventId !== null) extra['Last-Event-ID'] = lastEventId; // takes precedence over tail
  const tail = SSE_TAIL > 0 ? `&tail=${SSE_TAIL}` : '';
  const res = http.get(`${BASE_URL}/database_events?${SSE_FILTER}${tail}`, {
    headers: headers(READ_TOKEN, extra),
    timeout: `${SSE_HOLD_SECONDS}s`,
    tags: { name: 'database_events' },
    responseCallback: http.expectedStatuses(0, 200), // 0: ended by our timeout, as intended
  });
  const parsed = parseSse(res.body);
  let delivered = 0;
  for (const m of parsed.messages) {
    if (m.event === 'reset') sseResets.add(1);
    else delivered += 1;
    if (m.id !== null) lastEventId = m.id; // a reset's id is where to carry on from
  }
  sseMessages.add(delivered);
  check(res, { 'sse: stream held open until our timeout': (r) => r.status === 200 || r.error_code === 1050 });
}

// Runs inside Chromium: a real EventSource, latency = arrival - the probe's send time.
function collectLatencies(arg) {
  return new Promise((resolve) => {
    const values = [];
    let resets = 0;
    let errors = 0;
    const source = new EventSource(arg.url);
    source.onmessage = (e) => {
      const entry = JSON.parse(e.data);
      values.push(Date.now() - entry.timestamp);
    };
    source.addEventListener('reset', () => {
      resets += 1;
    });
    source.onerror = () => {
      errors += 1;
    };
    setTimeout(() => {
      source.close();
      resolve({ values, resets, errors });
    }, arg.seconds * 1000);
  });
}

export async function sseLatency() {
  const page = await browser.newPage();
  try {
    // Any page of the service makes the EventSource same-origin.
    await page.goto(`${BASE_URL}/healthcheck`);
    const query = [`name=${PROBE}`];
    if (READ_TOKEN) query.push(`token=${encodeURIComponent(READ_TOKEN)}`); // EventSource cannot send headers
    const result = await page.evaluate(collectLatencies, {
      url: `/database_events?${query.join('&')}`,
      seconds: SSE_LATENCY_WINDOW_SECONDS,
    });
    for (const ms of result.values) sseLatencyTrend.add(ms);
    sseResets.add(result.resets);
    check(result, { 'latency: the browser received probes': (r) => r.values.length > 0 });
  } finally {
    await page.close();
  }
}
