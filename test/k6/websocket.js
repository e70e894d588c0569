// k6: the original upload flow over WebSocket, with a check on every ACK.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8000 test/k6/websocket.js
//
// Each iteration opens /ws?sessionId=<new UUID> and sends, one frame at a time:
//   1. the original example: SESSION_START, three EVENTs, SESSION_END (a plain JSON array)
//      -> ACK batch 1, batch_id null, accepted 5, duplicate false
//   2. an envelope {"batch_id", "events": [one EVENT]} -> ACK batch 2, accepted 1
//   3. the same envelope again (a client resending) -> ACK batch 3, accepted 0, duplicate true
// Tokens: INGEST_TOKEN (or TOKEN) is sent as "Authorization: Bearer ...".
// K6_PROFILE=ci: 2 VUs, 6 iterations, no latency threshold.
import ws from 'k6/ws';
import crypto from 'k6/crypto';
import { check } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';

// K6_PROFILE=ci (what the test suite runs): a few seconds, few VUs, and only the
// functional thresholds, which do not depend on how busy the machine is; unset: the
// longer run of run.sh, with the latency thresholds too.
const CI = __ENV.K6_PROFILE === 'ci';
const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8000').replace(/\/+$/, '');
const WS_URL = BASE_URL.replace(/^http/, 'ws');
const INGEST_TOKEN = __ENV.INGEST_TOKEN || __ENV.TOKEN || '';
const TIMEOUT_MS = Number(__ENV.WS_TIMEOUT_MS || 10000);

// The timestamp of the assignment's example, in milliseconds.
const T0 = 1624422533298;

const ackLatency = new Trend('ws_ack_latency', true);
const acked = new Counter('ws_batches_acked');
const batchErrors = new Rate('ws_batch_errors');

const functional = {
  checks: ['rate==1.0'],
  ws_batch_errors: ['rate==0'],
  ws_batches_acked: ['count>0'],
};

export const options = {
  vus: Number(__ENV.VUS || (CI ? 2 : 1)),
  iterations: Number(__ENV.ITERATIONS || (CI ? 6 : 10)),
  thresholds: CI ? functional : Object.assign({ ws_ack_latency: ['p(95)<500'] }, functional),
};

export function uuidv4() {
  const b = new Uint8Array(crypto.randomBytes(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// The SPEC's example frame, verbatim except for the session id.
export function originalBatch(sessionId) {
  return [
    { timestamp: T0, type: 'SESSION_START', session_id: sessionId },
    { timestamp: T0, type: 'EVENT', name: 'event2' },
    { timestamp: T0, type: 'EVENT', name: 'test' },
    { timestamp: T0, type: 'EVENT', name: 'event2' },
    { timestamp: T0, type: 'SESSION_END', session_id: sessionId },
  ];
}

function authParams(token, tags) {
  const params = { tags };
  if (token) params.headers = { Authorization: `Bearer ${token}` };
  return params;
}

export default function () {
  const sessionId = uuidv4();
  const batchId = `k6-${uuidv4()}`;
  const retried = { batch_id: batchId, events: [{ timestamp: T0 + 1, type: 'EVENT', name: 'k6-retry' }] };
  const frames = [
    { body: originalBatch(sessionId), expect: { batch: 1, batch_id: null, accepted: 5, duplicate: false } },
    { body: retried, expect: { batch: 2, batch_id: batchId, accepted: 1, duplicate: false } },
    { body: retried, expect: { batch: 3, batch_id: batchId, accepted: 0, duplicate: true } },
  ];

  let next = 0;
  let sentAt = 0;
  let answered = 0;
  const url = `${WS_URL}/ws?sessionId=${sessionId}`;

  const res = ws.connect(url, authParams(INGEST_TOKEN, { name: 'ws' }), (socket) => {
    const sendNext = () => {
      sentAt = Date.now();
      socket.send(JSON.stringify(frames[next].body));
    };

    socket.on('open', sendNext);

    socket.on('message', (raw) => {
      if (next >= frames.length) return; // nothing more was asked
      const want = frames[next].expect;
      let msg = null;
      try {
        msg = JSON.parse(raw);
      } catch (e) {
        msg = null;
      }
      const ok = check(msg, {
        'answer is ACK': (m) => m !== null && m.type === 'ACK',
        'ACK numbers the frame': (m) => m !== null && m.batch === want.batch,
        'ACK echoes batch_id': (m) => m !== null && m.batch_id === want.batch_id,
        'ACK counts accepted events': (m) => m !== null && m.accepted === want.accepted,
        'ACK flags duplicates': (m) => m !== null && m.duplicate === want.duplicate,
      });
      if (msg !== null && msg.type === 'ERROR') {
        console.error(`batch ${msg.batch}: ${msg.error}: ${msg.message}`);
      }
      batchErrors.add(!ok);
      if (ok) {
        acked.add(1);
        ackLatency.add(Date.now() - sentAt);
      }
      answered += 1;
      next += 1;
      if (next < frames.length) {
        sendNext();
      } else {
        socket.close(1000);
      }
    });

    socket.on('error', (e) => {
      console.error(`websocket error: ${e.error()}`);
    });

    socket.setTimeout(() => {
      console.error(`no answer within ${TIMEOUT_MS} ms (frame ${next + 1})`);
      socket.close(1000);
    }, TIMEOUT_MS);
  });

  check(res, { 'WebSocket handshake 101': (r) => r !== null && r !== undefined && r.status === 101 });
  const allAnswered = check(answered, { 'every frame answered': (n) => n === frames.length });
  if (!allAnswered) batchErrors.add(true);
}
