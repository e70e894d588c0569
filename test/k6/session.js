// k6: GET /session/<id> (and /sessions) against a session this script uploaded itself.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8000 test/k6/session.js
//
// setup() uploads the SPEC's original example frame over /ws for a fresh session; each
// iteration then reads the tree back and checks it field by field, pages it with
// ?limit=2 / ?after=<next>, and checks the 400 and 404 answers.
// Tokens: INGEST_TOKEN (or TOKEN) for the upload, READ_TOKEN (or TOKEN) for the reads.
// K6_PROFILE=ci: 2 VUs, 20 iterations in all, no latency thresholds.
import http from 'k6/http';
import ws from 'k6/ws';
import crypto from 'k6/crypto';
import { check, fail } from 'k6';

// K6_PROFILE=ci (what the test suite runs): a few seconds, few VUs, and only the
// functional thresholds, which do not depend on how busy the machine is; unset: the
// longer run of run.sh, with the latency thresholds too.
const CI = __ENV.K6_PROFILE === 'ci';
const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8000').replace(/\/+$/, '');
const WS_URL = BASE_URL.replace(/^http/, 'ws');
const INGEST_TOKEN = __ENV.INGEST_TOKEN || __ENV.TOKEN || '';
const READ_TOKEN = __ENV.READ_TOKEN || __ENV.TOKEN || '';
const T0 = 1624422533298;
const EXPECTED_CHILDREN = [
  { type: 'EVENT', timestamp: T0, name: 'event2' },
  { type: 'EVENT', timestamp: T0, name: 'test' },
  { type: 'EVENT', timestamp: T0, name: 'event2' },
];

// The 404 and 400 probes are expected statuses, so no request at all may fail.
const functional = {
  checks: ['rate==1.0'],
  http_req_failed: ['rate==0'],
  'http_req_failed{name:session}': ['rate==0'],
};

// In CI a fixed amount of work (not a duration), so a busy machine only makes it slower.
export const options = {
  vus: Number(__ENV.VUS || (CI ? 2 : 5)),
  ...(CI ? { iterations: Number(__ENV.ITERATIONS || 20) } : { duration: __ENV.DURATION || '30s' }),
  thresholds: CI ? functional : Object.assign({ 'http_req_duration{name:session}': ['p(95)<100', 'p(99)<250'] }, functional),
};

export function uuidv4() {
  const b = new Uint8Array(crypto.randomBytes(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function headers(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function readParams(name, ...expected) {
  return {
    headers: headers(READ_TOKEN),
    tags: { name },
    responseCallback: http.expectedStatuses(...(expected.length ? expected : [200])),
  };
}

function sameChildren(got, want) {
  return (
    Array.isArray(got) &&
    got.length === want.length &&
    got.every((c, i) => c.type === want[i].type && c.timestamp === want[i].timestamp && c.name === want[i].name && !('data' in c))
  );
}

function json(res) {
  try {
    return res.json();
  } catch (e) {
    return null;
  }
}

// One frame on /ws, the answer parsed (or null).
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

export function setup() {
  const sessionId = uuidv4();
  const events = [
    { timestamp: T0, type: 'SESSION_START', session_id: sessionId },
    { timestamp: T0, type: 'EVENT', name: 'event2' },
    { timestamp: T0, type: 'EVENT', name: 'test' },
    { timestamp: T0, type: 'EVENT', name: 'event2' },
    { timestamp: T0, type: 'SESSION_END', session_id: sessionId },
  ];
  const { status, answer } = upload(sessionId, events);
  if (status !== 101 || answer === null || answer.type !== 'ACK' || answer.accepted !== 5) {
    fail(`upload of the example session failed: handshake ${status}, answer ${JSON.stringify(answer)}`);
  }
  return { sessionId };
}

export default function (data) {
  const sessionId = data.sessionId;

  const res = http.get(`${BASE_URL}/session/${sessionId}`, readParams('session'));
  const tree = json(res);
  check(res, {
    'session: 200': (r) => r.status === 200,
    'session: JSON': (r) => String(r.headers['Content-Type'] || '').startsWith('application/json'),
  });
  check(tree, {
    'session: type SESSION': (t) => t !== null && t.type === 'SESSION',
    'session: session_id': (t) => t !== null && t.session_id === sessionId,
    'session: start is the SESSION_START timestamp': (t) => t !== null && t.start === T0,
    'session: end is the SESSION_END timestamp': (t) => t !== null && t.end === T0,
    'session: children are the three EVENTs in order': (t) => t !== null && sameChildren(t.children, EXPECTED_CHILDREN),
  });

  // UUIDs are case-insensitive and come back lowercase.
  const upper = json(http.get(`${BASE_URL}/session/${sessionId.toUpperCase()}`, readParams('session')));
  check(upper, { 'session: upper-case id answers lowercase': (t) => t !== null && t.session_id === sessionId });

  // Paging: two children and a cursor, then the last one and no cursor.
  const first = json(http.get(`${BASE_URL}/session/${sessionId}?limit=2`, readParams('session_page')));
  const cursor = first !== null && typeof first.next === 'string' ? first.next : '';
  const second = json(
    http.get(`${BASE_URL}/session/${sessionId}?limit=2&after=${encodeURIComponent(cursor)}`, readParams('session_page')),
  );
  check(first, { 'page 1: two children and a next cursor': (p) => p !== null && p.children.length === 2 && cursor !== '' });
  check(second, {
    'page 2: the last child and next null': (p) =>
      p !== null && p.children.length === 1 && p.children[0].name === 'event2' && p.next === null,
  });

  const unknown = http.get(`${BASE_URL}/session/${uuidv4()}`, readParams('session_unknown', 404));
  check(unknown, { 'unknown session: 404 JSON error': (r) => r.status === 404 && json(r) !== null && 'error' in json(r) });

  const malformed = http.get(`${BASE_URL}/session/not-a-uuid`, readParams('session_malformed', 400));
  check(malformed, { 'malformed id: 400': (r) => r.status === 400 });

  const recent = http.get(`${BASE_URL}/sessions?limit=10`, readParams('sessions'));
  const list = json(recent);
  check(list, {
    'sessions: a list and a next cursor field': (l) => l !== null && Array.isArray(l.sessions) && 'next' in l,
    'sessions: entries have session_id, start, end, events': (l) =>
      l !== null && l.sessions.every((s) => 'session_id' in s && 'start' in s && 'end' in s && 'events' in s),
  });
}
