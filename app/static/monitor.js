/* eventservice live monitor: plain JS, no build step, no external requests.
 *
 * Data sources (all same-origin, see SPEC.md):
 *   GET /database_events  Server-Sent Events, one message per stored entry
 *   GET /sessions         recent sessions, paged with ?before=<cursor>
 *   GET /session/<id>     one session's tree, paged with ?limit=&after=<cursor>
 * When the server wants a read token (401), the page asks for one, keeps it in
 * localStorage and sends it as ?token= on every request and on the EventSource URL.
 *
 * Every piece of server data reaches the DOM through textContent or setAttribute,
 * never innerHTML.
 */
(function () {
  'use strict';

  const MAX_ROWS = 500;            // rows kept in the feed table
  const SESSION_PAGE = 50;         // sessions per /sessions page
  const TREE_PAGE = 1000;          // events per /session/<id> page
  const MAX_MARKS = 2000;          // timeline markers drawn (sampled above this)
  const EPS_WINDOW_MS = 5000;      // events/s averaging window
  const DATA_PREVIEW = 300;        // characters of data shown in a cell
  const TOKEN_KEY = 'eventservice.readToken';
  const TYPES = ['SESSION_START', 'EVENT', 'SESSION_END'];
  const TYPE_LABEL = { SESSION_START: 'start', EVENT: 'event', SESSION_END: 'end' };
  const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  const POS_RE = /^\d+$/;

  const $ = (id) => document.getElementById(id);

  const state = {
    token: '',
    filters: { session: '', names: [], types: [] },
    es: null,
    everOpened: false,
    lastId: null,            // last stream position seen (decimal string)
    startFrom: null,         // ?last_event_id= from the page address, used once
    reconnectTimer: null,
    backoffMs: 1000,
    paused: false,
    buffer: [],              // items held while paused (only the newest MAX_ROWS)
    bufferedCount: 0,        // how many arrived while paused
    pending: [],             // items waiting for the next render
    flushScheduled: false,
    received: 0,
    arrivals: [],            // arrival times for events/s
    arrivalsHead: 0,
    streamOpenedAt: 0,
    resetTimer: null,
    sessions: new Map(),     // session_id -> <li>
    sessionsNext: null,
    sessionsRefreshTimer: null,
    sessionsLoading: false,
    detail: null,            // {id, children, next, body, seq}
    detailSeq: 0,
    detailRefreshTimer: null,
  };

  /* ---------------------------------------------------------------- helpers */

  function storageGet(key) {
    try { return window.localStorage.getItem(key) || ''; } catch (e) { return ''; }
  }
  function storageSet(key, value) {
    try {
      if (value) window.localStorage.setItem(key, value);
      else window.localStorage.removeItem(key);
    } catch (e) { /* private mode: keep it in memory only */ }
  }

  function withToken(path, params) {
    const p = params || new URLSearchParams();
    if (state.token) p.set('token', state.token);
    const qs = p.toString();
    return qs ? path + (path.indexOf('?') >= 0 ? '&' : '?') + qs : path;
  }

  function isoTime(ms) {
    if (typeof ms !== 'number' || !isFinite(ms)) return '—';
    const d = new Date(ms);
    return isNaN(d.getTime()) ? String(ms) : d.toISOString();
  }

  function formatDuration(ms) {
    if (typeof ms !== 'number' || !isFinite(ms)) return '—';
    const sign = ms < 0 ? '−' : '';
    let rest = Math.abs(ms);
    if (rest < 1000) return sign + rest + ' ms';
    const days = Math.floor(rest / 86400000); rest -= days * 86400000;
    const hours = Math.floor(rest / 3600000); rest -= hours * 3600000;
    const mins = Math.floor(rest / 60000); rest -= mins * 60000;
    const secs = (rest / 1000).toFixed(3) + ' s';
    const parts = [];
    if (days) parts.push(days + ' d');
    if (days || hours) parts.push(hours + ' h');
    if (days || hours || mins) parts.push(mins + ' min');
    parts.push(secs);
    return sign + parts.join(' ');
  }

  function shortId(id) {
    return typeof id === 'string' && id.length > 8 ? id.slice(0, 8) + '…' : String(id);
  }

  function compactJson(value) {
    try { return JSON.stringify(value); } catch (e) { return String(value); }
  }

  // Stream positions are decimal integers that may outgrow a double: compare as text.
  function positionAfter(a, b) {
    const x = a.replace(/^0+(?=\d)/, '');
    const y = b.replace(/^0+(?=\d)/, '');
    if (x.length !== y.length) return x.length > y.length;
    return x > y;
  }

  function nameHue(name) {
    let h = 0;
    for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
    return h % 360;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  class AuthError extends Error {}
  class HttpError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function apiGet(path, params) {
    const res = await fetch(withToken(path, params), {
      headers: { Accept: 'application/json' },
      cache: 'no-store',
      credentials: 'same-origin',
    });
    if (res.status === 401) throw new AuthError('read token required');
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) {
      const msg = body && (body.message || body.error || body.detail);
      throw new HttpError(res.status, typeof msg === 'string' ? msg : res.status + ' ' + res.statusText);
    }
    return body;
  }

  /* ------------------------------------------------------- status & notice */

  const STATUS_TEXT = {
    connecting: 'connecting…',
    live: 'live',
    reconnecting: 'reconnecting…',
    reset: 'reset',
    auth: 'token needed',
  };

  function setStatus(name, detail) {
    const node = $('conn-status');
    node.dataset.state = name;
    node.textContent = STATUS_TEXT[name] || name;
    node.title = detail || 'Connection to /database_events: ' + (STATUS_TEXT[name] || name);
  }

  function showNotice(text, kind) {
    $('notice-text').textContent = text;
    $('notice').dataset.kind = kind || 'info';
    $('notice').hidden = false;
  }

  function hideNotice() { $('notice').hidden = true; }

  /* -------------------------------------------------------------- token */

  function showTokenPanel(message) {
    setStatus('auth', 'The server requires a read token');
    $('token-panel').hidden = false;
    const err = $('token-error');
    err.textContent = message || '';
    err.hidden = !message;
    $('token-input').focus();
  }

  async function onTokenSubmit(ev) {
    ev.preventDefault();
    const value = $('token-input').value.trim();
    if (!value) {
      showTokenPanel('Enter a read token.');
      return;
    }
    state.token = value;
    storageSet(TOKEN_KEY, value);
    $('token-input').value = '';
    updateTokenForget();
    const ok = await loadSessions(true);
    if (ok === 'auth') return;
    $('token-panel').hidden = true;
    openStream(false);
  }

  function forgetToken() {
    state.token = '';
    storageSet(TOKEN_KEY, '');
    updateTokenForget();
    closeStream();
    loadSessions(true).then((ok) => { if (ok !== 'auth') openStream(false); });
  }

  function updateTokenForget() { $('token-forget').hidden = !state.token; }

  /* ---------------------------------------------------------- filters */

  function readFiltersFromUrl() {
    const q = new URLSearchParams(window.location.search);
    // A token passed in the page address is taken once and removed from it.
    const urlToken = q.get('token');
    if (urlToken) {
      state.token = urlToken;
      storageSet(TOKEN_KEY, urlToken);
    }
    state.filters = {
      session: (q.get('session_id') || '').trim().toLowerCase(),
      names: q.getAll('name').filter((n) => n !== ''),
      types: q.getAll('type').filter((t) => TYPES.indexOf(t) >= 0),
    };
    const from = q.get('last_event_id');
    if (from && POS_RE.test(from)) state.startFrom = from;
    writeFiltersToForm();
    writeFiltersToUrl();
  }

  function writeFiltersToForm() {
    const f = state.filters;
    $('filter-session').value = f.session;
    $('filter-name').value = f.names.join(', ');
    document.querySelectorAll('#filters input[name="type"]').forEach((box) => {
      box.checked = f.types.indexOf(box.value) >= 0;
    });
    describeFilters();
  }

  function writeFiltersToUrl() {
    const f = state.filters;
    const q = new URLSearchParams();
    if (f.session) q.set('session_id', f.session);
    f.names.forEach((n) => q.append('name', n));
    f.types.forEach((t) => q.append('type', t));
    const qs = q.toString();
    const url = window.location.pathname + (qs ? '?' + qs : '') + window.location.hash;
    try { window.history.replaceState(null, '', url); } catch (e) { /* file:// etc. */ }
  }

  function describeFilters() {
    const f = state.filters;
    const parts = [];
    if (f.session) parts.push('session ' + shortId(f.session));
    if (f.names.length) parts.push('name ' + f.names.join(' | '));
    if (f.types.length) parts.push('type ' + f.types.map((t) => TYPE_LABEL[t]).join(' | '));
    $('active-filters').textContent = parts.length ? 'filtered: ' + parts.join(', ') : 'all changes';
  }

  function onFilterSubmit(ev) {
    ev.preventDefault();
    const session = $('filter-session').value.trim().toLowerCase();
    const err = $('filter-error');
    if (session && !UUID_RE.test(session)) {
      err.textContent = 'Session id must be a UUID, e.g. 0d856b46-48cd-4fba-946b-53d15b7b43e0.';
      err.hidden = false;
      $('filter-session').focus();
      return;
    }
    err.hidden = true;
    const names = $('filter-name').value.split(',').map((n) => n.trim()).filter((n) => n !== '');
    let types = [];
    document.querySelectorAll('#filters input[name="type"]').forEach((box) => {
      if (box.checked) types.push(box.value);
    });
    if (types.length === TYPES.length) types = [];
    applyFilters({ session, names, types });
  }

  function applyFilters(filters) {
    state.filters = filters;
    writeFiltersToForm();
    writeFiltersToUrl();
    // A new filter is a new view: start fresh at "now", not from an old position.
    clearFeed();
    state.lastId = null;
    openStream(false);
  }

  function clearFilters() {
    $('filter-error').hidden = true;
    applyFilters({ session: '', names: [], types: [] });
  }

  /* ---------------------------------------------------------- the stream */

  function streamUrl(from) {
    const f = state.filters;
    const q = new URLSearchParams();
    if (f.session) q.set('session_id', f.session);
    f.names.forEach((n) => q.append('name', n));
    f.types.forEach((t) => q.append('type', t));
    if (from) q.set('last_event_id', from);
    return withToken('/database_events', q);
  }

  function closeStream() {
    if (state.reconnectTimer) {
      clearTimeout(state.reconnectTimer);
      state.reconnectTimer = null;
    }
    if (state.es) {
      state.es.close();
      state.es = null;
    }
  }

  // resume: continue after state.lastId (the browser gave up on a connection);
  // otherwise start at "now" -- or, once, where the page address said (?last_event_id=).
  function openStream(resume) {
    closeStream();
    let from = null;
    if (resume) {
      from = state.lastId;
    } else if (state.startFrom) {
      from = state.startFrom;
      state.lastId = from;
    } else {
      state.lastId = null;
    }
    state.startFrom = null;
    setStatus(state.everOpened ? 'reconnecting' : 'connecting');
    let es;
    try {
      es = new EventSource(streamUrl(from));
    } catch (e) {
      scheduleReconnect();
      return;
    }
    state.es = es;
    es.onopen = () => {
      if (state.es !== es) return;
      const wasReconnect = state.everOpened;
      state.everOpened = true;
      state.backoffMs = 1000;
      state.streamOpenedAt = performance.now();
      setStatus('live');
      if (wasReconnect) scheduleSessionsRefresh();
    };
    es.onmessage = (ev) => { if (state.es === es) onStreamMessage(ev); };
    es.addEventListener('reset', (ev) => { if (state.es === es) onStreamReset(ev); });
    es.onerror = () => {
      if (state.es !== es) return;
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (HTTP error or wrong content type): find out why, retry.
        es.close();
        state.es = null;
        onStreamFailed();
      } else if (from) {
        // This URL carries ?last_event_id=<old position>; the browser's own retry would
        // resend it and replay from there. Reconnect ourselves from the newest position.
        es.close();
        state.es = null;
        scheduleReconnect();
      } else {
        // The browser reconnects by itself and sends Last-Event-ID.
        setStatus('reconnecting');
      }
    };
  }

  async function onStreamFailed() {
    setStatus('reconnecting');
    try {
      await apiGet('/sessions', new URLSearchParams({ limit: '1' }));
    } catch (e) {
      if (e instanceof AuthError) {
        closeStream();
        showTokenPanel(state.token ? 'The read token was rejected.' : '');
        return;
      }
    }
    scheduleReconnect();
  }

  function scheduleReconnect() {
    if (state.reconnectTimer) return;
    const delay = state.backoffMs;
    state.backoffMs = Math.min(state.backoffMs * 2, 30000);
    setStatus('reconnecting', 'Retrying in ' + Math.round(delay / 1000) + ' s');
    state.reconnectTimer = setTimeout(() => {
      state.reconnectTimer = null;
      openStream(true);
    }, delay);
  }

  function onStreamMessage(ev) {
    const id = ev.lastEventId || '';
    if (id && POS_RE.test(id) && state.lastId && POS_RE.test(state.lastId) && !positionAfter(id, state.lastId)) {
      return; // already shown (a replay overlapping what we had): never show a row twice
    }
    if (id) state.lastId = id;
    let msg;
    try { msg = JSON.parse(ev.data); } catch (e) { return; }
    if (!msg || typeof msg !== 'object') return;
    countArrival();
    if ($('conn-status').dataset.state !== 'live' && !state.resetTimer) setStatus('live');
    accept({ kind: 'row', msg, id });
  }

  function onStreamReset(ev) {
    let reason = '';
    try {
      const body = JSON.parse(ev.data);
      reason = (body && (body.reason || body.message)) || '';
    } catch (e) {
      reason = ev.data || '';
    }
    if (typeof reason !== 'string') reason = compactJson(reason);
    // The reset carries the current position: carry on from there.
    state.lastId = ev.lastEventId && POS_RE.test(ev.lastEventId) ? ev.lastEventId : null;
    setStatus('reset', 'The server reset the stream: ' + reason);
    if (state.resetTimer) clearTimeout(state.resetTimer);
    state.resetTimer = setTimeout(() => {
      state.resetTimer = null;
      if ($('conn-status').dataset.state === 'reset') setStatus(state.es ? 'live' : 'reconnecting');
    }, 5000);
    showNotice('The server reset the stream' + (reason ? ' (' + reason + ')' : '') +
      '. Changes before this point may be missing from the table; sessions were reloaded.', 'warn');
    accept({ kind: 'reset', reason, id: state.lastId });
    loadSessions(true);
    if (state.detail) openSession(state.detail.id);
  }

  function countArrival() {
    state.received += 1;
    state.arrivals.push(performance.now());
  }

  function updateEps() {
    const now = performance.now();
    const a = state.arrivals;
    while (state.arrivalsHead < a.length && a[state.arrivalsHead] < now - EPS_WINDOW_MS) state.arrivalsHead++;
    if (state.arrivalsHead > 4096 && state.arrivalsHead * 2 > a.length) {
      state.arrivals = a.slice(state.arrivalsHead);
      state.arrivalsHead = 0;
    }
    const count = state.arrivals.length - state.arrivalsHead;
    const span = Math.max(1000, Math.min(EPS_WINDOW_MS, now - (state.streamOpenedAt || now)));
    const eps = count * 1000 / span;
    $('eps').textContent = eps >= 10 ? String(Math.round(eps)) : eps.toFixed(1);
  }

  /* ---------------------------------------------------- pause & rendering */

  function accept(item) {
    if (state.paused) {
      state.buffer.push(item);
      if (item.kind === 'row') state.bufferedCount += 1;
      if (state.buffer.length > MAX_ROWS) state.buffer.splice(0, state.buffer.length - MAX_ROWS);
      updatePausedCount();
      return;
    }
    state.pending.push(item);
    if (state.pending.length > MAX_ROWS) state.pending.splice(0, state.pending.length - MAX_ROWS);
    scheduleFlush();
  }

  function scheduleFlush() {
    if (state.flushScheduled) return;
    state.flushScheduled = true;
    const run = () => { if (state.flushScheduled) flush(); };
    window.requestAnimationFrame(run);
    setTimeout(run, 200); // rAF does not run in background tabs
  }

  function flush() {
    state.flushScheduled = false;
    const items = state.pending;
    if (!items.length) return;
    state.pending = [];
    const body = $('feed-body');
    const frag = document.createDocumentFragment();
    let touchedOpenSession = false;
    let unknownSession = false;
    for (let i = items.length - 1; i >= 0; i--) { // newest on top
      const item = items[i];
      if (item.kind === 'reset') {
        frag.appendChild(makeResetRow(item));
        continue;
      }
      frag.appendChild(makeRow(item.msg, item.id));
      const sid = item.msg.session_id;
      if (state.detail && sid === state.detail.id) touchedOpenSession = true;
      if (typeof sid === 'string' && !state.sessions.has(sid)) unknownSession = true;
      else if (typeof sid === 'string') touchSessionItem(item.msg);
    }
    body.insertBefore(frag, body.firstChild);
    while (body.rows.length > MAX_ROWS) body.deleteRow(-1);
    updateFeedCount();
    updateEps();
    if (unknownSession) scheduleSessionsRefresh();
    if (touchedOpenSession) scheduleDetailRefresh();
  }

  function makeRow(msg, id) {
    const tr = el('tr', 'row fresh');
    tr.dataset.testid = 'feed-row';
    const type = typeof msg.type === 'string' ? msg.type : '?';
    tr.dataset.type = type;
    if (id) tr.dataset.position = id;
    if (typeof msg.session_id === 'string') tr.dataset.session = msg.session_id;
    if (typeof msg.name === 'string') tr.dataset.name = msg.name;

    const pos = el('td', 'c-pos', id || '');
    pos.dataset.label = '#';
    tr.appendChild(pos);

    const typeCell = el('td', 'c-type');
    typeCell.dataset.label = 'Type';
    const badge = el('span', 'badge t-' + type.toLowerCase().replace(/[^a-z_]/g, ''), TYPE_LABEL[type] || type);
    badge.title = type;
    typeCell.appendChild(badge);
    tr.appendChild(typeCell);

    const sessCell = el('td', 'c-session');
    sessCell.dataset.label = 'Session';
    if (typeof msg.session_id === 'string') {
      const btn = el('button', 'link session-link', shortId(msg.session_id));
      btn.type = 'button';
      btn.title = 'Show session ' + msg.session_id;
      btn.dataset.testid = 'feed-session';
      btn.dataset.sessionId = msg.session_id;
      sessCell.appendChild(btn);
    }
    tr.appendChild(sessCell);

    const nameCell = el('td', 'c-name', typeof msg.name === 'string' ? msg.name : '');
    nameCell.dataset.label = 'Name';
    if (typeof msg.name === 'string') nameCell.title = msg.name;
    tr.appendChild(nameCell);

    const tsCell = el('td', 'c-ts');
    tsCell.dataset.label = 'Time';
    const time = el('time', null, isoTime(msg.timestamp));
    if (typeof msg.timestamp === 'number') {
      time.dateTime = isoTime(msg.timestamp);
      time.title = msg.timestamp + ' ms since the epoch';
    }
    tsCell.appendChild(time);
    tr.appendChild(tsCell);

    tr.appendChild(makeDataCell(msg, 'c-data'));
    return tr;
  }

  function makeDataCell(obj, className) {
    const td = el('td', className);
    td.dataset.label = 'Data';
    if (Object.prototype.hasOwnProperty.call(obj, 'data')) {
      const text = compactJson(obj.data);
      const code = el('code', 'data', text.length > DATA_PREVIEW ? text.slice(0, DATA_PREVIEW) + '…' : text);
      code.title = text.length > 2000 ? text.slice(0, 2000) + '…' : text;
      if (text.length > DATA_PREVIEW) {
        code.dataset.full = '1';
        code.tabIndex = 0;
        code.addEventListener('click', () => toggleData(code, text));
      }
      td.appendChild(code);
    }
    return td;
  }

  function toggleData(code, text) {
    const open = code.classList.toggle('expanded');
    code.textContent = open ? text : text.slice(0, DATA_PREVIEW) + '…';
  }

  function makeResetRow(item) {
    const tr = el('tr', 'reset-row');
    tr.dataset.testid = 'reset-row';
    const td = el('td', null, '⟲ stream reset' + (item.reason ? ' (' + item.reason + ')' : '') +
      (item.id ? ' at position ' + item.id : '') + ' — changes before this line may be missing');
    td.colSpan = 6;
    tr.appendChild(td);
    return tr;
  }

  function updateFeedCount() {
    const n = $('feed-body').rows.length;
    $('feed-count').textContent = n + (n === 1 ? ' row' : ' rows') + ' · ' + state.received + ' received';
    $('feed-empty').hidden = n > 0;
  }

  function clearFeed() {
    $('feed-body').textContent = '';
    state.pending = [];
    state.buffer = [];
    state.bufferedCount = 0;
    updatePausedCount();
    updateFeedCount();
  }

  function togglePause() {
    state.paused = !state.paused;
    const btn = $('pause-btn');
    btn.setAttribute('aria-pressed', String(state.paused));
    btn.textContent = state.paused ? 'Resume' : 'Pause';
    document.body.classList.toggle('paused', state.paused);
    if (!state.paused) {
      const held = state.buffer;
      state.buffer = [];
      state.bufferedCount = 0;
      held.forEach((item) => state.pending.push(item));
      if (state.pending.length > MAX_ROWS) state.pending.splice(0, state.pending.length - MAX_ROWS);
      scheduleFlush();
    }
    updatePausedCount();
  }

  function updatePausedCount() {
    const node = $('paused-count');
    node.hidden = !state.paused;
    node.dataset.count = String(state.bufferedCount);
    node.textContent = state.bufferedCount + ' waiting';
  }

  /* ---------------------------------------------------------- sessions */

  // Returns 'auth' when a token is needed, true on success, false on other errors.
  async function loadSessions(fromStart) {
    if (state.sessionsLoading && !fromStart) return false;
    state.sessionsLoading = true;
    const status = $('sessions-status');
    const q = new URLSearchParams({ limit: String(SESSION_PAGE) });
    if (!fromStart && state.sessionsNext) q.set('before', state.sessionsNext);
    try {
      const body = await apiGet('/sessions', q);
      const list = body && Array.isArray(body.sessions) ? body.sessions : [];
      if (fromStart) {
        $('sessions-list').textContent = '';
        state.sessions.clear();
      }
      list.forEach((s) => appendSession(s));
      state.sessionsNext = body && body.next ? String(body.next) : null;
      $('sessions-more').hidden = !state.sessionsNext;
      status.textContent = state.sessions.size ? '' : 'No sessions yet.';
      return true;
    } catch (e) {
      if (e instanceof AuthError) {
        closeStream();
        showTokenPanel(state.token ? 'The read token was rejected.' : '');
        status.textContent = 'A read token is needed to list sessions.';
        return 'auth';
      }
      status.textContent = 'Could not load sessions: ' + e.message;
      return false;
    } finally {
      state.sessionsLoading = false;
    }
  }

  // Refresh the newest page in place: new sessions go on top, known ones are updated.
  async function refreshSessionsTop() {
    if (state.sessionsLoading) { scheduleSessionsRefresh(); return; }
    state.sessionsLoading = true;
    try {
      const body = await apiGet('/sessions', new URLSearchParams({ limit: String(SESSION_PAGE) }));
      const list = body && Array.isArray(body.sessions) ? body.sessions : [];
      const fresh = [];
      list.forEach((s) => {
        if (state.sessions.has(s.session_id)) fillSessionItem(state.sessions.get(s.session_id), s);
        else fresh.push(s);
      });
      const ul = $('sessions-list');
      for (let i = fresh.length - 1; i >= 0; i--) {
        const li = makeSessionItem(fresh[i]);
        li.classList.add('fresh');
        ul.insertBefore(li, ul.firstChild);
        state.sessions.set(fresh[i].session_id, li);
      }
      if (state.sessions.size && !state.sessionsNext && body && body.next && fresh.length === list.length) {
        state.sessionsNext = String(body.next);
        $('sessions-more').hidden = false;
      }
      $('sessions-status').textContent = state.sessions.size ? '' : 'No sessions yet.';
    } catch (e) {
      if (e instanceof AuthError) showTokenPanel(state.token ? 'The read token was rejected.' : '');
    } finally {
      state.sessionsLoading = false;
    }
  }

  function scheduleSessionsRefresh() {
    if (state.sessionsRefreshTimer) return;
    state.sessionsRefreshTimer = setTimeout(() => {
      state.sessionsRefreshTimer = null;
      refreshSessionsTop();
    }, 1000);
  }

  function appendSession(s) {
    if (!s || typeof s.session_id !== 'string' || state.sessions.has(s.session_id)) return;
    const li = makeSessionItem(s);
    $('sessions-list').appendChild(li);
    state.sessions.set(s.session_id, li);
  }

  function makeSessionItem(s) {
    const li = el('li');
    const btn = el('button', 'session-item');
    btn.type = 'button';
    btn.dataset.testid = 'session-item';
    btn.dataset.sessionId = s.session_id;
    btn.title = 'Show session ' + s.session_id;
    btn.appendChild(el('code', 'sid', s.session_id));
    const meta = el('span', 'meta');
    meta.appendChild(el('span', 'state'));
    meta.appendChild(el('time', 'when'));
    meta.appendChild(el('span', 'count'));
    btn.appendChild(meta);
    li.appendChild(btn);
    if (state.detail && state.detail.id === s.session_id) btn.setAttribute('aria-current', 'true');
    fillSessionItem(li, s);
    return li;
  }

  function fillSessionItem(li, s) {
    const btn = li.firstChild;
    const ended = typeof s.end === 'number';
    const started = typeof s.start === 'number';
    btn.dataset.start = started ? String(s.start) : '';
    btn.dataset.end = ended ? String(s.end) : '';
    const badge = btn.querySelector('.state');
    badge.textContent = ended ? 'ended' : started ? 'open' : 'no start';
    badge.className = 'state ' + (ended ? 's-ended' : started ? 's-open' : 's-none');
    const when = btn.querySelector('.when');
    when.textContent = started ? isoTime(s.start) : '';
    if (ended && started) when.title = 'duration ' + formatDuration(s.end - s.start);
    const n = typeof s.events === 'number' ? s.events : 0;
    btn.dataset.events = String(n);
    btn.querySelector('.count').textContent = n + (n === 1 ? ' event' : ' events');
  }

  // Cheap local touch-up between refreshes: mark the session as active.
  function touchSessionItem(msg) {
    const li = state.sessions.get(msg.session_id);
    if (li) {
      li.classList.remove('fresh');
      void li.offsetWidth; // restart the highlight animation
      li.classList.add('fresh');
      scheduleSessionsRefresh();
    }
  }

  /* ------------------------------------------------------ session tree */

  async function openSession(id, append) {
    if (!UUID_RE.test(id)) return;
    id = id.toLowerCase();
    const panel = $('session-detail');
    const seq = ++state.detailSeq;
    if (!append || !state.detail || state.detail.id !== id) {
      state.detail = { id, children: [], next: null, body: null };
      $('detail-id').textContent = id;
      panel.dataset.sessionId = id;
      panel.dataset.loaded = 'false';
      $('detail-status').textContent = 'Loading…';
      document.querySelectorAll('.session-item[aria-current]').forEach((b) => b.removeAttribute('aria-current'));
      const li = state.sessions.get(id);
      if (li) li.firstChild.setAttribute('aria-current', 'true');
    }
    panel.hidden = false;
    document.body.classList.add('detail-open');
    const q = new URLSearchParams({ limit: String(TREE_PAGE) });
    if (append && state.detail.next) q.set('after', state.detail.next);
    try {
      const body = await apiGet('/session/' + encodeURIComponent(id), q);
      if (seq !== state.detailSeq) return; // a newer request won
      const children = body && Array.isArray(body.children) ? body.children : [];
      const d = state.detail;
      d.body = body;
      d.children = append ? d.children.concat(children) : children;
      d.next = body && body.next ? String(body.next) : null;
      renderDetail();
      $('detail-status').textContent = '';
      panel.dataset.loaded = 'true';
    } catch (e) {
      if (seq !== state.detailSeq) return;
      if (e instanceof AuthError) {
        showTokenPanel(state.token ? 'The read token was rejected.' : '');
        $('detail-status').textContent = 'A read token is needed.';
      } else if (e.status === 404) {
        state.detail.body = null;
        state.detail.children = [];
        renderDetail();
        $('detail-status').textContent = 'No such session (nothing stored for it yet).';
      } else {
        $('detail-status').textContent = 'Could not load the session: ' + e.message;
      }
      panel.dataset.loaded = 'error';
    }
  }

  function closeSession() {
    state.detailSeq += 1;
    state.detail = null;
    $('session-detail').hidden = true;
    document.body.classList.remove('detail-open');
    document.querySelectorAll('.session-item[aria-current]').forEach((b) => b.removeAttribute('aria-current'));
  }

  function scheduleDetailRefresh() {
    if (!state.detail || state.detailRefreshTimer) return;
    if (state.detail.next) {
      $('detail-status').textContent = 'New changes arrived for this session: press Reload.';
      return;
    }
    state.detailRefreshTimer = setTimeout(() => {
      state.detailRefreshTimer = null;
      if (state.detail && !state.detail.next) openSession(state.detail.id);
    }, 1000);
  }

  function renderDetail() {
    const d = state.detail;
    const body = d.body || {};
    const start = typeof body.start === 'number' ? body.start : null;
    const end = typeof body.end === 'number' ? body.end : null;
    $('detail-start').textContent = start !== null ? isoTime(start) : '— (no SESSION_START yet)';
    $('detail-end').textContent = end !== null ? isoTime(end) : '— (open)';
    $('detail-duration').textContent = start !== null && end !== null ? formatDuration(end - start) : '—';
    $('detail-count').textContent = d.children.length + (d.next ? '+ (more to load)' : '');
    $('tree-more').hidden = !d.next;

    // Timeline bounds: the session's start/end and every event loaded.
    let lo = start !== null ? start : Infinity;
    let hi = end !== null ? end : -Infinity;
    d.children.forEach((c) => {
      if (typeof c.timestamp === 'number') {
        if (c.timestamp < lo) lo = c.timestamp;
        if (c.timestamp > hi) hi = c.timestamp;
      }
    });
    const marks = $('timeline-marks');
    marks.textContent = '';
    const has = isFinite(lo) && isFinite(hi);
    $('timeline-from').textContent = has ? isoTime(lo) : '';
    $('timeline-to').textContent = has && hi !== lo ? isoTime(hi) + ' (' + formatDuration(hi - lo) + ')' : '';
    const pct = (t) => (hi > lo ? ((t - lo) / (hi - lo)) * 100 : 50);
    const frag = document.createDocumentFragment();
    if (start !== null) frag.appendChild(makeMark('mark-start', pct(start), 'SESSION_START ' + isoTime(start)));
    if (end !== null) frag.appendChild(makeMark('mark-end', pct(end), 'SESSION_END ' + isoTime(end)));
    const step = Math.max(1, Math.ceil(d.children.length / MAX_MARKS));
    for (let i = 0; i < d.children.length; i += step) {
      const c = d.children[i];
      if (typeof c.timestamp !== 'number') continue;
      const name = typeof c.name === 'string' ? c.name : '';
      const m = makeMark('mark-event', pct(c.timestamp), name + ' · ' + isoTime(c.timestamp));
      m.style.setProperty('--hue', String(nameHue(name)));
      m.dataset.testid = 'timeline-mark';
      frag.appendChild(m);
    }
    marks.appendChild(frag);

    const tbody = $('tree-body');
    tbody.textContent = '';
    const rows = document.createDocumentFragment();
    const origin = start !== null ? start : lo;
    d.children.forEach((c) => {
      const tr = el('tr');
      tr.dataset.testid = 'tree-event';
      if (typeof c.name === 'string') tr.dataset.name = c.name;
      const off = el('td', 'offset', typeof c.timestamp === 'number' && isFinite(origin)
        ? '+' + formatDuration(c.timestamp - origin) : '');
      off.dataset.label = 'Offset';
      tr.appendChild(off);
      const ts = el('td', 'c-ts', isoTime(c.timestamp));
      ts.dataset.label = 'Time';
      if (typeof c.timestamp === 'number') ts.title = c.timestamp + ' ms since the epoch';
      tr.appendChild(ts);
      const nm = el('td', 'c-name');
      nm.dataset.label = 'Name';
      const swatch = el('span', 'swatch');
      swatch.style.setProperty('--hue', String(nameHue(typeof c.name === 'string' ? c.name : '')));
      nm.appendChild(swatch);
      nm.appendChild(document.createTextNode(typeof c.name === 'string' ? c.name : ''));
      tr.appendChild(nm);
      tr.appendChild(makeDataCell(c, 'c-data'));
      rows.appendChild(tr);
    });
    tbody.appendChild(rows);
  }

  function makeMark(className, left, title) {
    const m = el('span', 'mark ' + className);
    m.style.left = Math.min(100, Math.max(0, left)).toFixed(3) + '%';
    m.title = title;
    return m;
  }

  /* ------------------------------------------------------------- wiring */

  function onSessionClick(ev) {
    const target = ev.target.closest('[data-session-id]');
    if (target && target.tagName === 'BUTTON') {
      ev.preventDefault();
      openSession(target.dataset.sessionId);
    }
  }

  function bind() {
    $('max-rows').textContent = String(MAX_ROWS);
    $('pause-btn').addEventListener('click', togglePause);
    $('filters').addEventListener('submit', onFilterSubmit);
    $('filter-clear').addEventListener('click', clearFilters);
    $('feed-clear').addEventListener('click', () => { clearFeed(); });
    $('feed-body').addEventListener('click', onSessionClick);
    $('sessions-list').addEventListener('click', onSessionClick);
    $('sessions-more').addEventListener('click', () => loadSessions(false));
    $('sessions-refresh').addEventListener('click', () => loadSessions(true));
    $('detail-close').addEventListener('click', closeSession);
    $('detail-reload').addEventListener('click', () => { if (state.detail) openSession(state.detail.id); });
    $('detail-filter').addEventListener('click', () => {
      if (!state.detail) return;
      applyFilters({ session: state.detail.id, names: [], types: [] });
    });
    $('tree-more').addEventListener('click', () => { if (state.detail) openSession(state.detail.id, true); });
    $('notice-close').addEventListener('click', hideNotice);
    $('token-form').addEventListener('submit', onTokenSubmit);
    $('token-forget').addEventListener('click', forgetToken);
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && state.detail) closeSession();
    });
    setInterval(updateEps, 500);
    // The session panel opens below the header, so status and Pause stay in reach.
    const header = document.querySelector('.topbar');
    const fit = () => document.documentElement.style.setProperty('--topbar-height', header.offsetHeight + 'px');
    fit();
    if (window.ResizeObserver) new ResizeObserver(fit).observe(header);
  }

  async function start() {
    state.token = storageGet(TOKEN_KEY);
    bind();
    readFiltersFromUrl();
    updateTokenForget();
    // On a phone the filter form folds away unless a filter is active.
    const f = state.filters;
    if (window.matchMedia && window.matchMedia('(max-width: 640px)').matches &&
        !f.session && !f.names.length && !f.types.length) {
      $('filters-box').open = false;
    }
    updateFeedCount();
    updatePausedCount();
    const ok = await loadSessions(true);
    if (ok === 'auth') return; // the token form opens the stream once a token works
    openStream(false);
  }

  // Small hook for tests and the curious: read-only view of the page state.
  window.eventMonitor = {
    get lastId() { return state.lastId; },
    get received() { return state.received; },
    get paused() { return state.paused; },
    maxRows: MAX_ROWS,
  };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
