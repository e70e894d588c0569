/* eventservice monitor: the Analytics view. Plain JS and SVG drawn here, no library,
 * no build step, nothing outside the page's own origin (its CSP allows nothing else).
 *
 * Figures come from GET /stats/summary, /stats/timeseries, /stats/names and
 * /stats/funnel for the chosen range. While the view is open it keeps its own
 * unfiltered /database_events stream (the live feed's may be filtered or paused):
 *  - additive figures move as entries arrive (events per bucket and per name, the
 *    events total, sessions started per bucket), without a refetch;
 *  - what cannot be added up from single entries (distinct sessions, percentiles,
 *    the histogram, the funnel) is refetched, at most every LIVE_REFRESH_MS while
 *    entries arrive, without the timeseries;
 *  - a preset range ("last hour") slides when its last bucket ends: a refetch, as
 *    for any change of range or bucket.
 * Every chart has SVG <title>s for hover and a visually hidden table for screen readers.
 */
(function () {
  'use strict';

  const M = window.eventMonitor;
  if (!M) return;
  const api = M.api;
  const el = api.el;
  const $ = (id) => document.getElementById(id);

  const SVG_NS = 'http://www.w3.org/2000/svg';
  const RANGE_MS = { '1h': 3600000, '24h': 86400000, '7d': 7 * 86400000 };
  const BUCKET_MS = { minute: 60000, hour: 3600000, day: 86400000 };
  const LIVE_REFRESH_MS = 10000;
  const NAMES_LIMIT = 100;        // names fetched: the table and the funnel's choices
  const MIN_STEPS = 2;
  const MAX_STEPS = 10;
  const HIST_LABELS = ['≤ 1 s', '≤ 5 s', '≤ 10 s', '≤ 30 s', '≤ 1 min', '≤ 5 min', '≤ 10 min', '≤ 30 min', '≤ 1 h', '> 1 h'];

  const st = {
    visible: false,
    seq: 0,
    funnelSeq: 0,
    from: 0,
    to: 0,
    bucket: 'hour',
    live: false,
    ts: null,                // /stats/timeseries body, moved by live entries
    summary: null,
    names: null,
    funnel: null,
    steps: ['', ''],         // chosen funnel step names ('' = not chosen)
    es: null,
    slideTimer: null,
    refreshTimer: null,
    renderScheduled: false,
    liveApplied: 0,          // entries applied since the last fetch (tests and the curious)
    bdName: '',              // the breakdown's name and key ('' = not chosen)
    bdKey: '',
    breakdown: null,         // /stats/breakdown body
    bdSeq: 0,
  };

  /* -------------------------------------------------------------- window */

  function autoBucket(span) {
    return span <= 3 * 3600000 ? 'minute' : span <= 3 * 86400000 ? 'hour' : 'day';
  }

  // Presets end at the end of the current bucket (when the range holds at least 4
  // of them, so every bucket is whole) or of the current minute, and slide from there.
  function computeWindow() {
    const range = $('an-range').value;
    const chosen = $('an-bucket').value;
    const now = Date.now();
    if (range === 'custom') {
      const from = parseUtc($('an-from').value);
      const to = parseUtc($('an-to').value);
      if (from === null || to === null) return 'Pick both ends of the custom range.';
      if (from >= to) return 'The range must end after it starts.';
      st.from = from;
      st.to = to;
      st.bucket = chosen === 'auto' ? autoBucket(to - from) : chosen;
    } else {
      const span = RANGE_MS[range];
      st.bucket = chosen === 'auto' ? autoBucket(span) : chosen;
      const b = BUCKET_MS[st.bucket];
      const align = span >= 4 * b ? b : 60000;
      st.to = Math.floor(now / align) * align + align;
      st.from = st.to - span;
    }
    st.live = st.from <= now && now < st.to;
    return null;
  }

  // <input type="datetime-local"> has no zone: the page reads and writes it as UTC.
  function parseUtc(value) {
    if (!value) return null;
    const ms = Date.parse(value + (value.length === 16 ? ':00Z' : 'Z'));
    return isFinite(ms) ? ms : null;
  }

  function toInput(ms) {
    return new Date(ms).toISOString().slice(0, 16);
  }

  function bucketLabel(t, bucket) {
    const iso = api.isoTime(t);
    if (bucket === 'minute') return iso.slice(11, 16);
    if (bucket === 'hour') return iso.slice(5, 10) + ' ' + iso.slice(11, 13) + 'h';
    return iso.slice(0, 10);
  }

  function bucketTitle(t, bucket) {
    const iso = api.isoTime(t);
    if (bucket === 'day') return iso.slice(0, 10) + ' (UTC day)';
    return iso.slice(0, 10) + ' ' + iso.slice(11, 16) + ' UTC' + (bucket === 'hour' ? ' (hour)' : '');
  }

  function describeWindow() {
    const a = api.isoTime(st.from).replace('T', ' ').slice(0, 16);
    const b = api.isoTime(st.to).replace('T', ' ').slice(0, 16);
    $('an-window').textContent = a + ' → ' + b + ' UTC · by ' + st.bucket;
    $('an-live').hidden = !(st.live && st.es && st.es.readyState === EventSource.OPEN);
  }

  /* ------------------------------------------------------------- fetching */

  function rangeParams() {
    return new URLSearchParams({ from: String(st.from), to: String(st.to) });
  }

  function showError(e) {
    const node = $('an-error');
    if (!e) { node.hidden = true; node.textContent = ''; return; }
    if (e instanceof api.AuthError) api.askForToken();
    node.textContent = typeof e === 'string' ? e : 'Could not load the figures: ' + e.message;
    node.hidden = false;
  }

  async function refetchAll() {
    const seq = ++st.seq;
    clearTimeout(st.slideTimer);
    clearTimeout(st.refreshTimer);
    st.refreshTimer = null;
    const bad = computeWindow();
    if (bad) { showError(bad); return; }
    describeWindow();
    showError(null);
    $('view-analytics').dataset.loaded = 'loading';
    const q = rangeParams();
    const tq = rangeParams();
    tq.set('bucket', st.bucket);
    const nq = rangeParams();
    nq.set('limit', String(NAMES_LIMIT));
    try {
      const [summary, ts, names] = await Promise.all([
        api.get('/stats/summary', q), api.get('/stats/timeseries', tq), api.get('/stats/names', nq),
      ]);
      if (seq !== st.seq) return;
      st.summary = summary;
      st.ts = ts;
      st.names = names;
      st.liveApplied = 0;
      renderAll();
      await refreshFunnel();
      await refreshBreakdown();
      if (seq !== st.seq) return;
      $('view-analytics').dataset.loaded = 'true';
    } catch (e) {
      if (seq !== st.seq) return;
      $('view-analytics').dataset.loaded = 'error';
      showError(e);
    }
    scheduleSlide();
  }

  function scheduleSlide() {
    clearTimeout(st.slideTimer);
    if (!st.visible || $('an-range').value === 'custom') return;
    const wait = Math.max(1000, st.to - Date.now() + 250);
    st.slideTimer = setTimeout(refetchAll, Math.min(wait, 2147483000));
  }

  // Distinct counts, percentiles and the funnel: refetched, not added up.
  function scheduleLiveRefresh() {
    if (st.refreshTimer) return;
    st.refreshTimer = setTimeout(async () => {
      st.refreshTimer = null;
      const seq = st.seq;
      try {
        const nq = rangeParams();
        nq.set('limit', String(NAMES_LIMIT));
        const [summary, names] = await Promise.all([api.get('/stats/summary', rangeParams()), api.get('/stats/names', nq)]);
        if (seq !== st.seq) return;
        st.summary = summary;
        st.names = names;
        scheduleRender();
        await refreshFunnel();
        await refreshBreakdown();
      } catch (e) {
        if (seq === st.seq) showError(e);
      }
    }, LIVE_REFRESH_MS);
  }

  async function refreshFunnel() {
    const steps = st.steps.filter((s) => s !== '');
    const status = $('an-funnel-status');
    const seq = ++st.funnelSeq;
    if (steps.length < MIN_STEPS) {
      st.funnel = null;
      status.textContent = 'Pick at least two steps, in the order a session takes them.';
      renderFunnel();
      return;
    }
    const q = rangeParams();
    steps.forEach((s) => q.append('step', s));
    const within = $('an-within').value;
    if (within) q.set('within', within);
    status.textContent = 'Loading…';
    try {
      const body = await api.get('/stats/funnel', q);
      if (seq !== st.funnelSeq) return;
      st.funnel = body;
      status.textContent = 'Sessions started in the range that took the steps in this order' +
        (within ? ', within ' + $('an-within').selectedOptions[0].textContent + ' of the first.' : '.');
    } catch (e) {
      if (seq !== st.funnelSeq) return;
      st.funnel = null;
      status.textContent = 'Could not load the funnel: ' + e.message;
      if (e instanceof api.AuthError) api.askForToken();
    }
    renderFunnel();
  }

  async function refreshBreakdown() {
    const status = $('an-bd-status');
    const seq = ++st.bdSeq;
    if (!st.bdName || !st.bdKey) {
      st.breakdown = null;
      status.textContent = 'Pick a name and one of the data keys its events carry.';
      renderBreakdown();
      return;
    }
    const q = rangeParams();
    q.set('name', st.bdName);
    q.set('key', st.bdKey);
    q.set('limit', '10');
    try {
      const body = await api.get('/stats/breakdown', q);
      if (seq !== st.bdSeq) return;
      st.breakdown = body;
      status.textContent = st.bdName + ' events in the range by data.' + st.bdKey + ' (bars: events; sessions in the label).';
    } catch (e) {
      if (seq !== st.bdSeq) return;
      st.breakdown = null;
      status.textContent = 'Could not load the breakdown: ' + e.message;
      if (e instanceof api.AuthError) api.askForToken();
    }
    renderBreakdown();
  }

  /* ---------------------------------------------------------- live stream */

  function openStream() {
    closeStream();
    const es = new EventSource(api.withToken('/database_events'));
    st.es = es;
    es.onopen = () => { if (st.es === es) describeWindow(); };
    es.onerror = () => { if (st.es === es) describeWindow(); };
    es.onmessage = (ev) => {
      if (st.es !== es) return;
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      if (msg && typeof msg === 'object') applyEntry(msg);
    };
    // The server could not keep this stream whole: the figures are refetched.
    es.addEventListener('reset', () => { if (st.es === es) refetchAll(); });
  }

  function closeStream() {
    if (st.es) { st.es.close(); st.es = null; }
  }

  function applyEntry(msg) {
    const ts = st.ts;
    const t = msg.timestamp;
    if (!ts || typeof t !== 'number' || t < st.from || t >= st.to || !Array.isArray(ts.total) || !ts.total.length) return;
    const b = BUCKET_MS[st.bucket];
    const i = Math.floor((t - ts.total[0][0]) / b);
    if (i < 0 || i >= ts.total.length) return;
    if (msg.type === 'EVENT') {
      ts.total[i][1] += 1;
      (ts.series || []).forEach((s) => { if (s.name === msg.name && s.points[i]) s.points[i][1] += 1; });
      if (st.summary && typeof st.summary.events === 'number') st.summary.events += 1;
      const row = st.names && (st.names.names || []).find((n) => n.name === msg.name);
      if (row) row.events += 1;
    } else if (msg.type === 'SESSION_START' && Array.isArray(ts.sessions_started) && ts.sessions_started[i]) {
      ts.sessions_started[i][1] += 1;
    } else {
      return;
    }
    st.liveApplied += 1;
    scheduleRender();
    scheduleLiveRefresh();
  }

  /* ------------------------------------------------------------ rendering */

  function scheduleRender() {
    if (st.renderScheduled) return;
    st.renderScheduled = true;
    const run = () => { if (st.renderScheduled) { st.renderScheduled = false; renderAll(); } };
    window.requestAnimationFrame(run);
    setTimeout(run, 250);
  }

  function renderAll() {
    if (!st.visible) return;
    renderSummary();
    renderEvents();
    renderSessions();
    renderHistogram();
    renderNames();
    renderStepChoices();
    renderFunnel();
    renderBreakdownChoices();
    renderBreakdown();
  }

  function fillSelect(select, prompt, values, chosen) {
    const key = JSON.stringify([prompt, values, chosen]);
    if (select.dataset.choices === key) return;
    select.dataset.choices = key;
    select.textContent = '';
    select.appendChild(new Option(prompt, ''));
    values.forEach((v) => select.appendChild(new Option(v, v)));
    select.value = chosen;
  }

  // Names from /stats/names; keys from the data the feed has seen for that name.
  function renderBreakdownChoices() {
    const names = knownNames();
    if (st.bdName && names.indexOf(st.bdName) < 0) names.push(st.bdName);
    fillSelect($('an-bd-name'), 'choose a name…', names, st.bdName);
    renderKeyChoices();
  }

  function renderKeyChoices() {
    const keys = st.bdName ? M.api.dataKeys(st.bdName) : [];
    if (st.bdKey && keys.indexOf(st.bdKey) < 0) keys.push(st.bdKey);
    fillSelect($('an-bd-key'), keys.length || !st.bdName ? 'choose a key…' : 'no data keys seen for this name', keys, st.bdKey);
  }

  function renderBreakdown() {
    const fig = $('an-breakdown');
    fig.textContent = '';
    const b = st.breakdown;
    if (!b || !Array.isArray(b.values)) return;
    const rows = b.values.map((v) => ({ label: JSON.stringify(v.value), events: v.events, sessions: v.sessions, cls: 'bar breakdown' }));
    if (b.other && b.other.events) rows.push({ label: '(other values)', events: b.other.events, sessions: b.other.sessions, cls: 'bar breakdown other' });
    if (b.missing && b.missing.events) rows.push({ label: '(no ' + b.key + ')', events: b.missing.events, sessions: b.missing.sessions, cls: 'bar breakdown missing' });
    if (!rows.length) {
      fig.appendChild(el('p', 'muted', 'No ' + b.name + ' events in the range.'));
      return;
    }
    const W = Math.max(260, Math.floor(fig.clientWidth || 500));
    const rowH = 36;
    const H = rows.length * rowH + 4;
    const max = Math.max(...rows.map((r) => r.events), 1);
    const root = svg('svg', { width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': 'Breakdown of ' + b.name + ' by ' + b.key, class: 'chart-svg' });
    rows.forEach((r, i) => {
      const y = i * rowH + 2;
      const bar = svg('rect', { x: 0, y: y + 16, width: Math.max(2, (r.events / max) * W), height: 14, rx: 3, class: r.cls });
      bar.dataset.testid = 'an-bd-bar';
      bar.dataset.events = String(r.events);
      bar.dataset.value = r.label;
      bar.appendChild(svg('title', {}, r.label + ': ' + fmt(r.events) + ' events, ' + fmt(r.sessions) + ' sessions'));
      root.appendChild(bar);
      const text = r.label.length > 60 ? r.label.slice(0, 59) + '…' : r.label;
      root.appendChild(svg('text', { x: 0, y: y + 12, class: 'label' }, text));
      root.appendChild(svg('text', { x: W, y: y + 12, 'text-anchor': 'end', class: 'label strong' }, fmt(r.events) + ' · ' + fmt(r.sessions) + ' sess.'));
    });
    fig.appendChild(root);
    srTable(fig, 'Breakdown of ' + b.name + ' by ' + b.key, ['Value', 'Events', 'Sessions'],
      rows.map((r) => [r.label, fmt(r.events), fmt(r.sessions)]));
  }

  function fmt(n) {
    if (n === null || n === undefined) return '—';
    if (typeof n !== 'number') return String(n);
    return Number.isInteger(n) ? n.toLocaleString('en-US') : n.toLocaleString('en-US', { maximumFractionDigits: 1 });
  }

  // Compact: "350 ms", "20.5 s", "1 min 28 s", "2 h 5 min", "3 d 4 h" (exact ms on hover).
  function dur(ms) {
    if (ms === null || ms === undefined || !isFinite(ms)) return '—';
    const v = Math.round(ms);
    if (v < 1000) return v + ' ms';
    if (v < 60000) return (Math.round(v / 100) / 10) + ' s';
    const parts = [[86400000, 'd'], [3600000, 'h'], [60000, 'min'], [1000, 's']];
    const out = [];
    let rest = v;
    for (const [unit, label] of parts) {
      const n = Math.floor(rest / unit);
      rest -= n * unit;
      if (n || out.length) out.push(n + ' ' + label);
      if (out.length === 2) break;
    }
    return out.filter((p) => !p.startsWith('0 ')).join(' ') || '0 s';
  }

  function renderSummary() {
    const s = st.summary;
    const dl = $('an-summary');
    dl.textContent = '';
    if (!s) return;
    const sessions = s.sessions || {};
    const d = s.duration_ms || {};
    const e = s.events_per_session || {};
    const figures = [
      ['sessions-started', 'Sessions started', fmt(sessions.started)],
      ['sessions-ended', 'Sessions ended', fmt(sessions.ended)],
      ['sessions-open', 'Sessions open', fmt(sessions.open)],
      ['events', 'Events', fmt(s.events)],
      ['names', 'Event names', fmt(s.names)],
      ['duration-p50', 'Duration p50', dur(d.p50)],
      ['duration-p90', 'Duration p90', dur(d.p90)],
      ['duration-p99', 'Duration p99', dur(d.p99)],
      ['duration-mean', 'Duration mean', dur(d.mean)],
      ['eps-p50', 'Events/session p50', fmt(e.p50)],
      ['eps-p90', 'Events/session p90', fmt(e.p90)],
      ['eps-mean', 'Events/session mean', fmt(e.mean)],
    ];
    figures.forEach(([key, label, value]) => {
      const box = el('div');
      box.dataset.figure = key;
      box.appendChild(el('dt', null, label));
      const dd = el('dd', null, value);
      dd.dataset.testid = 'figure-' + key;
      const raw = { 'duration-p50': d.p50, 'duration-p90': d.p90, 'duration-p99': d.p99, 'duration-mean': d.mean }[key];
      if (raw !== undefined && raw !== null) dd.title = raw + ' ms';
      box.appendChild(dd);
      dl.appendChild(box);
    });
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs || {}).forEach((k) => node.setAttribute(k, String(attrs[k])));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    const m = v / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }

  // By rank, not by a hash of the name: five colours that stay apart (Okabe-Ito).
  const PALETTE = ['#e69f00', '#0072b2', '#009e73', '#cc79a7', '#d55e00', '#56b4e9', '#f0e442', '#999999'];
  function seriesColour(index) {
    return PALETTE[index % PALETTE.length];
  }

  // The frame every chart shares: y axis with 3 ticks, x labels at a few buckets.
  function frame(fig, label, max, labels) {
    fig.textContent = '';
    const W = Math.max(260, Math.floor(fig.clientWidth || 600));
    const H = 190;
    const pad = { l: 44, r: 8, t: 8, b: 26 };
    const root = svg('svg', { width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': label, class: 'chart-svg' });
    const plotW = W - pad.l - pad.r;
    const plotH = H - pad.t - pad.b;
    const y = (v) => pad.t + plotH - (max > 0 ? (v / max) * plotH : 0);
    [0, max / 2, max].forEach((v) => {
      root.appendChild(svg('line', { x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v), class: 'grid' }));
      root.appendChild(svg('text', { x: pad.l - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'tick' }, fmt(v)));
    });
    const n = labels.length;
    const step = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(plotW / 90))));
    const slot = plotW / Math.max(1, n);
    for (let i = 0; i < n; i += step) {
      root.appendChild(svg('text', { x: pad.l + slot * (i + 0.5), y: H - 8, 'text-anchor': 'middle', class: 'tick' }, labels[i]));
    }
    fig.appendChild(root);
    return { root, W, H, pad, plotW, plotH, y, slot };
  }

  // A table for screen readers (and anyone who wants the numbers), beside the chart.
  function srTable(fig, caption, head, rows) {
    const table = el('table', 'visually-hidden');
    table.dataset.testid = 'sr-table';
    table.appendChild(el('caption', null, caption));
    const thead = el('thead');
    const tr = el('tr');
    head.forEach((h) => { const th = el('th', null, h); th.scope = 'col'; tr.appendChild(th); });
    thead.appendChild(tr);
    table.appendChild(thead);
    const tbody = el('tbody');
    rows.forEach((r) => {
      const row = el('tr');
      r.forEach((c, i) => {
        const cell = el(i === 0 ? 'th' : 'td', null, c);
        if (i === 0) cell.scope = 'row';
        row.appendChild(cell);
      });
      tbody.appendChild(row);
    });
    table.appendChild(tbody);
    fig.appendChild(table);
  }

  function renderEvents() {
    const fig = $('an-events');
    const ts = st.ts;
    const legend = $('an-events-legend');
    legend.textContent = '';
    if (!ts || !Array.isArray(ts.total)) { fig.textContent = ''; return; }
    const series = [{ name: 'all events', points: ts.total, cls: 'total' }].concat(
      (ts.series || []).map((s, i) => ({ name: s.name, points: s.points, colour: seriesColour(i) })));
    let max = 0;
    series.forEach((s) => s.points.forEach((p) => { if (p[1] > max) max = p[1]; }));
    max = niceMax(max);
    const labels = ts.total.map((p) => bucketLabel(p[0], st.bucket));
    const f = frame(fig, 'Events per ' + st.bucket + ', all events and the top names', max, labels);
    const x = (i) => f.pad.l + f.slot * (i + 0.5);
    series.slice().reverse().forEach((s) => {
      const d = s.points.map((p, i) => (i ? 'L' : 'M') + x(i).toFixed(1) + ' ' + f.y(p[1]).toFixed(1)).join(' ');
      const attrs = { d, class: 'line' + (s.cls ? ' ' + s.cls : ''), fill: 'none' };
      if (s.colour) attrs.stroke = s.colour;
      const path = svg('path', attrs);
      path.appendChild(svg('title', {}, s.name));
      f.root.appendChild(path);
      if (s.points.length <= 90) {
        s.points.forEach((p, i) => {
          const dot = svg('circle', { cx: x(i), cy: f.y(p[1]), r: 2.2, class: 'dot' + (s.cls ? ' ' + s.cls : '') });
          if (s.colour) dot.setAttribute('fill', s.colour);
          f.root.appendChild(dot);
        });
      }
    });
    // One hover band per bucket, naming every series' figure in it.
    ts.total.forEach((p, i) => {
      const band = svg('rect', { x: f.pad.l + f.slot * i, y: f.pad.t, width: Math.max(1, f.slot), height: f.plotH, class: 'band' });
      band.dataset.bucket = String(p[0]);
      band.appendChild(svg('title', {}, bucketTitle(p[0], st.bucket) + '\n' +
        series.map((s) => s.name + ': ' + fmt(s.points[i] ? s.points[i][1] : 0)).join('\n')));
      f.root.appendChild(band);
    });
    series.forEach((s) => {
      const item = el('span', 'legend-item');
      const sw = el('span', 'legend-swatch' + (s.cls ? ' ' + s.cls : ''));
      if (s.colour) sw.style.setProperty('background', s.colour);
      item.appendChild(sw);
      item.appendChild(document.createTextNode(s.name));
      legend.appendChild(item);
    });
    srTable(fig, 'Events per ' + st.bucket, ['Bucket (UTC)'].concat(series.map((s) => s.name)),
      ts.total.map((p, i) => [bucketTitle(p[0], st.bucket)].concat(series.map((s) => fmt(s.points[i] ? s.points[i][1] : 0)))));
  }

  function bars(fig, label, values, labels, titles, cls) {
    let max = 0;
    values.forEach((v) => { if (v > max) max = v; });
    const f = frame(fig, label, niceMax(max), labels);
    const gap = f.slot > 6 ? Math.min(4, f.slot * 0.2) : 0;
    values.forEach((v, i) => {
      const top = f.y(v);
      const bar = svg('rect', {
        x: f.pad.l + f.slot * i + gap / 2, y: top, width: Math.max(1, f.slot - gap),
        height: Math.max(0, f.pad.t + f.plotH - top), class: 'bar ' + cls,
      });
      bar.dataset.value = String(v);
      bar.appendChild(svg('title', {}, titles[i] + ': ' + fmt(v)));
      f.root.appendChild(bar);
    });
  }

  function renderSessions() {
    const fig = $('an-sessions');
    const ts = st.ts;
    if (!ts || !Array.isArray(ts.sessions_started)) { fig.textContent = ''; return; }
    const pts = ts.sessions_started;
    const titles = pts.map((p) => bucketTitle(p[0], st.bucket));
    bars(fig, 'Sessions started per ' + st.bucket, pts.map((p) => p[1]), pts.map((p) => bucketLabel(p[0], st.bucket)), titles, 'sessions');
    srTable(fig, 'Sessions started per ' + st.bucket, ['Bucket (UTC)', 'Sessions started'], pts.map((p, i) => [titles[i], fmt(p[1])]));
  }

  function renderHistogram() {
    const fig = $('an-hist');
    const hist = st.summary && Array.isArray(st.summary.duration_histogram) ? st.summary.duration_histogram : null;
    if (!hist) { fig.textContent = ''; return; }
    const labels = hist.map((b, i) => HIST_LABELS[i] || (b.le_ms === null ? 'longer' : '≤ ' + dur(b.le_ms)));
    const titles = labels.map((l) => 'Sessions lasting ' + l);
    bars(fig, 'Sessions by duration (ended sessions started in the range)', hist.map((b) => b.sessions), labels, titles, 'hist');
    srTable(fig, 'Sessions by duration', ['Duration', 'Sessions'], hist.map((b, i) => [labels[i], fmt(b.sessions)]));
  }

  function renderNames() {
    const body = $('an-names-body');
    body.textContent = '';
    const names = st.names && Array.isArray(st.names.names) ? st.names.names.slice() : [];
    names.sort((a, b) => b.events - a.events || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    if (!names.length) {
      const tr = el('tr');
      const td = el('td', 'muted', 'No events in this range.');
      td.colSpan = 3;
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    names.forEach((n) => {
      const tr = el('tr');
      tr.dataset.testid = 'an-name-row';
      tr.dataset.name = n.name;
      const td = el('td');
      const btn = el('button', 'link name-filter clip');
      btn.type = 'button';
      btn.dataset.testid = 'an-name';
      btn.dataset.name = n.name;
      btn.title = 'Show only "' + n.name + '" in the live feed';
      btn.appendChild(document.createTextNode(n.name));
      td.appendChild(btn);
      tr.appendChild(td);
      const ev = el('td', 'num', fmt(n.events));
      ev.dataset.testid = 'an-name-events';
      tr.appendChild(ev);
      const se = el('td', 'num', fmt(n.sessions));
      se.dataset.testid = 'an-name-sessions';
      tr.appendChild(se);
      body.appendChild(tr);
    });
  }

  function knownNames() {
    const names = st.names && Array.isArray(st.names.names) ? st.names.names.map((n) => n.name) : [];
    st.steps.forEach((s) => { if (s && names.indexOf(s) < 0) names.push(s); });
    return names;
  }

  // Rebuilt only when the choices change, so a live refresh never closes an open list.
  let stepsKey = '';
  function renderStepChoices() {
    const list = $('an-steps');
    const names = knownNames();
    const key = JSON.stringify([names, st.steps]);
    if (key === stepsKey && list.childNodes.length) return;
    stepsKey = key;
    list.textContent = '';
    st.steps.forEach((value, i) => {
      const li = el('li', 'step');
      li.dataset.testid = 'an-step';
      const label = el('label', 'visually-hidden', 'Step ' + (i + 1));
      const id = 'an-step-' + i;
      label.htmlFor = id;
      const select = el('select');
      select.id = id;
      select.dataset.testid = 'an-step-select';
      select.dataset.index = String(i);
      select.appendChild(new Option('choose a name…', ''));
      names.forEach((n) => select.appendChild(new Option(n, n)));
      select.value = value;
      li.appendChild(label);
      li.appendChild(select);
      if (st.steps.length > MIN_STEPS) {
        const rm = el('button', 'icon', '×');
        rm.type = 'button';
        rm.dataset.testid = 'an-step-remove';
        rm.dataset.index = String(i);
        rm.setAttribute('aria-label', 'Remove step ' + (i + 1));
        li.appendChild(rm);
      }
      list.appendChild(li);
    });
    $('an-step-add').disabled = st.steps.length >= MAX_STEPS;
  }

  function renderFunnel() {
    const fig = $('an-funnel');
    fig.textContent = '';
    const steps = st.funnel && Array.isArray(st.funnel.steps) ? st.funnel.steps : null;
    if (!steps || !steps.length) return;
    const W = Math.max(260, Math.floor(fig.clientWidth || 500));
    const rowH = 40;
    const H = steps.length * rowH + 4;
    const root = svg('svg', { width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': 'Funnel: sessions at each step', class: 'chart-svg' });
    const first = steps[0].sessions || 0;
    steps.forEach((s, i) => {
      const frac = first > 0 ? s.sessions / first : 0;
      const y = i * rowH + 2;
      const conv = s.conversion === null || s.conversion === undefined ? '—' : (s.conversion * 100).toFixed(1) + ' %';
      const bar = svg('rect', { x: 0, y: y + 16, width: Math.max(2, frac * W), height: 18, rx: 3, class: 'bar funnel' });
      bar.dataset.sessions = String(s.sessions);
      bar.appendChild(svg('title', {}, (i + 1) + '. ' + s.name + ': ' + fmt(s.sessions) + ' sessions, ' + conv + ' of step 1'));
      root.appendChild(bar);
      root.appendChild(svg('text', { x: 0, y: y + 12, class: 'label' }, (i + 1) + '. ' + s.name));
      root.appendChild(svg('text', { x: W, y: y + 12, 'text-anchor': 'end', class: 'label strong' }, fmt(s.sessions) + ' · ' + conv));
    });
    fig.appendChild(root);
    srTable(fig, 'Funnel', ['Step', 'Sessions', 'Conversion'],
      steps.map((s, i) => [(i + 1) + '. ' + s.name, fmt(s.sessions),
        s.conversion === null || s.conversion === undefined ? '—' : (s.conversion * 100).toFixed(1) + ' %']));
  }

  /* --------------------------------------------------------------- wiring */

  function onView(name) {
    const visible = name === 'analytics';
    if (visible === st.visible) return;
    st.visible = visible;
    if (visible) {
      openStream();
      refetchAll();
    } else {
      closeStream();
      clearTimeout(st.slideTimer);
      clearTimeout(st.refreshTimer);
      st.refreshTimer = null;
      st.seq += 1;
    }
  }

  function onRangeChange() {
    const custom = $('an-range').value === 'custom';
    document.querySelectorAll('.an-custom').forEach((n) => { n.hidden = !custom; });
    if (custom) {
      if (!$('an-from').value) $('an-from').value = toInput(st.from || Date.now() - 86400000);
      if (!$('an-to').value) $('an-to').value = toInput(st.to || Date.now());
      return; // wait for "Show"
    }
    refetchAll();
  }

  function bind() {
    $('an-range').addEventListener('change', onRangeChange);
    $('an-bucket').addEventListener('change', () => refetchAll());
    $('an-controls').addEventListener('submit', (ev) => { ev.preventDefault(); refetchAll(); });
    $('an-names-body').addEventListener('click', (ev) => {
      const btn = ev.target.closest('[data-testid="an-name"]');
      if (btn) api.filterFeedByName(btn.dataset.name);
    });
    $('an-steps').addEventListener('change', (ev) => {
      const select = ev.target.closest('select');
      if (!select) return;
      st.steps[Number(select.dataset.index)] = select.value;
      refreshFunnel();
    });
    $('an-steps').addEventListener('click', (ev) => {
      const rm = ev.target.closest('[data-testid="an-step-remove"]');
      if (!rm) return;
      st.steps.splice(Number(rm.dataset.index), 1);
      renderStepChoices();
      refreshFunnel();
    });
    $('an-step-add').addEventListener('click', () => {
      if (st.steps.length >= MAX_STEPS) return;
      st.steps.push('');
      renderStepChoices();
    });
    $('an-within').addEventListener('change', refreshFunnel);
    $('an-bd-name').addEventListener('change', () => {
      st.bdName = $('an-bd-name').value;
      st.bdKey = '';
      renderBreakdownChoices();
      refreshBreakdown();
    });
    $('an-bd-key').addEventListener('focus', renderBreakdownChoices);
    M.api.onDataKeys((name) => { if (name === st.bdName) renderKeyChoices(); });
    $('an-bd-key').addEventListener('change', () => { st.bdKey = $('an-bd-key').value; refreshBreakdown(); });
    $('an-bd-form').addEventListener('submit', (ev) => ev.preventDefault());
    $('an-funnel-form').addEventListener('submit', (ev) => ev.preventDefault());
    let resizeTimer = null;
    window.addEventListener('resize', () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(renderAll, 150);
    });
    renderStepChoices();
    api.onView(onView);
    onView(document.body.dataset.view || 'live');
  }

  window.eventAnalytics = {
    get liveApplied() { return st.liveApplied; },
    get window() { return { from: st.from, to: st.to, bucket: st.bucket }; },
    get breakdown() { return { name: st.bdName, key: st.bdKey, visible: st.visible, seq: st.seq }; },
  };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', bind);
  else bind();
})();
