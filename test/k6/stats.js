// k6: GET /stats/summary, /stats/timeseries, /stats/names and /stats/funnel.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8000 test/k6/stats.js
//
// setup() uploads three sessions of its own over /ws into a one-hour window picked at
// random in 2001 (so earlier runs and other data do not touch it), each iteration
// checks the exact figures of that window, then loads the figures of the last 24 hours
// (whatever the service holds: latency under a realistic range), and checks that a
// reversed range is a 400.
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
const HOUR = 3600000;
const YEAR_2001 = 978307200000;

// The reversed-range probe is an expected 400, so no request at all may fail.
const functional = {
  checks: ['rate==1.0'],
  http_req_failed: ['rate==0'],
  'http_req_failed{name:stats_window}': ['rate==0'],
};
const latency = {
  'http_req_duration{name:stats_window}': ['p(95)<200'],
  'http_req_duration{name:stats_day}': [`p(99)<${__ENV.STATS_P99_MS || 1000}`],
};

// In CI a fixed amount of work (not a duration), so a busy machine only makes it slower.
export const options = {
  vus: Number(__ENV.VUS || (CI ? 2 : 5)),
  ...(CI ? { iterations: Number(__ENV.ITERATIONS || 20) } : { duration: __ENV.DURATION || '30s' }),
  thresholds: CI ? functional : Object.assign({}, latency, functional),
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

function json(res) {
  try {
    return res.json();
  } catch (e) {
    return null;
  }
}

function upload(sessionId, events) {
  let answer = null;
  const res = ws.connect(`${WS_URL}/ws?sessionId=${sessionId}`, { headers: headers(INGEST_TOKEN), tags: { name: 'ws' } }, (socket) => {
    socket.on('open', () => socket.send(JSON.stringify(events)));
    socket.on('message', (raw) => {
      answer = JSON.parse(raw);
      socket.close(1000);
    });
    socket.setTimeout(() => socket.close(1000), 10000);
  });
  return { status: res ? res.status : 0, answer };
}

// Three sessions: view→cart→buy (ends after 2 s), view→cart (ends after 30 s), view (open).
export function setup() {
  const from = YEAR_2001 + Math.floor(Math.random() * 8000) * HOUR;
  const t = from + 10 * 60000 + 123; // 10 minutes into the window
  const plans = [
    { steps: ['view', 'cart', 'buy'], end: 2000 },
    { steps: ['view', 'cart'], end: 30000 },
    { steps: ['view'], end: null },
  ];
  for (const plan of plans) {
    const sessionId = uuidv4();
    const events = [{ type: 'SESSION_START', timestamp: t }];
    plan.steps.forEach((name, i) => events.push({ type: 'EVENT', timestamp: t + 100 * (i + 1), name }));
    if (plan.end !== null) events.push({ type: 'SESSION_END', timestamp: t + plan.end });
    const { status, answer } = upload(sessionId, events);
    if (status !== 101 || answer === null || answer.type !== 'ACK' || answer.accepted !== events.length) {
      fail(`upload of the stats sessions failed: handshake ${status}, answer ${JSON.stringify(answer)}`);
    }
  }
  return { from, to: from + HOUR };
}

export default function (data) {
  const span = `from=${data.from}&to=${data.to}`;

  const summary = json(http.get(`${BASE_URL}/stats/summary?${span}`, readParams('stats_window')));
  check(summary, {
    'summary: range echoed as ms': (s) => s !== null && s.from === data.from && s.to === data.to,
    'summary: 3 started, 2 ended, 1 open': (s) =>
      s !== null && s.sessions.started === 3 && s.sessions.ended === 2 && s.sessions.open === 1,
    'summary: 6 events of 3 names': (s) => s !== null && s.events === 6 && s.names === 3,
    'summary: durations p50 2000, p99 30000, mean 16000': (s) =>
      s !== null && s.duration_ms.p50 === 2000 && s.duration_ms.p99 === 30000 && s.duration_ms.mean === 16000,
    'summary: histogram bins 5 s and 30 s hold one each': (s) =>
      s !== null &&
      s.duration_histogram.length === 10 &&
      s.duration_histogram[1].le_ms === 5000 && s.duration_histogram[1].sessions === 1 &&
      s.duration_histogram[3].le_ms === 30000 && s.duration_histogram[3].sessions === 1 &&
      s.duration_histogram[9].le_ms === null,
  });

  const series = json(http.get(`${BASE_URL}/stats/timeseries?${span}&bucket=minute&name=view`, readParams('stats_window')));
  check(series, {
    'timeseries: 60 minute buckets': (s) => s !== null && s.bucket === 'minute' && s.total.length === 60,
    'timeseries: all 6 events and 3 starts in minute 10': (s) =>
      s !== null && s.total[10][1] === 6 && s.sessions_started[10][1] === 3 &&
      s.total.reduce((n, p) => n + p[1], 0) === 6,
    'timeseries: the view series': (s) => s !== null && s.series.length === 1 && s.series[0].name === 'view' && s.series[0].points[10][1] === 3,
  });

  const names = json(http.get(`${BASE_URL}/stats/names?${span}`, readParams('stats_window')));
  check(names, {
    'names: most events first, ties by name': (n) =>
      n !== null && JSON.stringify(n.names.map((x) => [x.name, x.events, x.sessions])) === JSON.stringify([['view', 3, 3], ['cart', 2, 2], ['buy', 1, 1]]),
  });

  const funnel = json(http.get(`${BASE_URL}/stats/funnel?${span}&step=view&step=cart&step=buy`, readParams('stats_window')));
  check(funnel, {
    'funnel: 3 → 2 → 1 sessions': (f) => f !== null && f.steps.map((x) => x.sessions).join() === '3,2,1',
    'funnel: conversion 1, 2/3, 1/3': (f) =>
      f !== null && f.steps[0].conversion === 1 && f.steps[1].conversion === 2 / 3 && f.steps[2].conversion === 1 / 3,
  });

  // The last 24 hours of whatever the service holds.
  for (const path of ['summary', 'timeseries?bucket=hour', 'names']) {
    const res = http.get(`${BASE_URL}/stats/${path}`, readParams('stats_day'));
    check(res, { 'last 24 h: 200 JSON': (r) => r.status === 200 && json(r) !== null });
  }

  const reversed = http.get(`${BASE_URL}/stats/summary?from=${data.to}&to=${data.from}`, readParams('stats_bad', 400));
  check(reversed, { 'reversed range: 400 JSON error': (r) => r.status === 400 && json(r) !== null && 'error' in json(r) });
}
