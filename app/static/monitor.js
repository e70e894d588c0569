/* eventservice live monitor: plain JS, no build step, no external requests.
 *
 * Data sources (all same-origin; the page's Content-Security-Policy allows no other):
 *   GET /database_events  Server-Sent Events, one message per stored entry; a fresh
 *                         view opens with ?tail=200 (the latest stored entries, then
 *                         live), "Load older" reads a larger tail with fetch() and
 *                         stops at the oldest row shown
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

  const MAX_ROWS = 500;            // rows kept in the feed table (raised by "Load older")
  const ROWS_CEILING = 5000;       // ... but never above this
  const TAIL_ON_OPEN = 200;        // stored entries shown when a view opens
  const TAIL_MAX = 10000;          // the server's ?tail= limit
  const OLDER_PAGE = 200;          // rows added by one "Load older"
  const OLDER_TIMEOUT_MS = 20000;
  const RESET_SHOW_MS = 4000;      // how long the badge shows "reset" before the connection state
  const SESSION_PAGE = 50;         // sessions per /sessions page
  const TREE_PAGE = 1000;          // events per /session/<id> page
  const MAX_MARKS = 2000;          // timeline markers drawn (sampled above this)
  const EPS_WINDOW_MS = 5000;      // events/s averaging window
  const DATA_PREVIEW = 1000;       // characters of data in a collapsed cell (all of it once expanded)
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
    conn: 'connecting',      // the connection's own state; the badge may show "reset" over it
    maxRows: MAX_ROWS,
    viewSeen: 0,             // entries this view has received (tail, live and older)
    historyOpen: false,      // the stored entries of ?tail= are arriving
    historyUntil: 0,
    historyEnd: null,
    olderLoading: false,
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
    search: null,            // the /sessions filters of the session search (URLSearchParams), or null
    dataKeys: new Map(),     // event name -> Set of the top-level data keys seen in the feed
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

  // The connection's state. A reset shows for a few seconds, then the badge returns
  // to whatever the connection is by then (live once the stream is connected again).
  function setConn(name, detail) {
    state.conn = name;
    if (!state.resetTimer) setStatus(name, detail);
  }

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

  // The empty feed says why it is empty: nothing stored, or nothing readable yet.
  const EMPTY_NO_TOKEN = 'A read token is needed to show what is stored: enter one above.';
  let emptyStored = null;

  function showTokenPanel(message) {
    setConn('auth', 'The server requires a read token');
    if (emptyStored === null) emptyStored = Array.from($('feed-empty').childNodes, (n) => n.cloneNode(true));
    $('feed-empty').textContent = EMPTY_NO_TOKEN;
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
    if (emptyStored !== null) $('feed-empty').replaceChildren(...emptyStored);
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

  // A position resumes; otherwise the latest `tail` stored entries come first. The
  // browser's own reconnects keep ?tail= but send Last-Event-ID, which wins.
  function streamUrl(from, tail) {
    const f = state.filters;
    const q = new URLSearchParams();
    if (f.session) q.set('session_id', f.session);
    f.names.forEach((n) => q.append('name', n));
    f.types.forEach((t) => q.append('type', t));
    if (from) q.set('last_event_id', from);
    else if (tail) q.set('tail', String(tail));
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
    if (!resume) state.viewSeen = 0;
    setConn(state.everOpened ? 'reconnecting' : 'connecting');
    let es;
    try {
      es = new EventSource(streamUrl(from, from ? 0 : TAIL_ON_OPEN));
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
      // Stored entries of ?tail= arrive in one burst right after the open; they are
      // history, not arrivals, for the events/s figure and the highlight.
      // (A live entry that beats the tail's first burst would be taken for history:
      // it only misses the events/s figure.)
      state.historyOpen = !from && !state.lastId;
      state.historyUntil = performance.now() + 1000;
      setConn('live');
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
        setConn('reconnecting');
      }
    };
  }

  async function onStreamFailed() {
    setConn('reconnecting');
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
    setConn('reconnecting', 'Retrying in ' + Math.round(delay / 1000) + ' s');
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
    let history = false;
    if (state.historyOpen && performance.now() < state.historyUntil) {
      history = true;
      // Chromium dispatches every message of one received chunk in one task: the
      // burst ends at the first task boundary.
      if (!state.historyEnd) {
        state.historyEnd = setTimeout(() => { state.historyOpen = false; state.historyEnd = null; }, 0);
      }
    } else {
      state.historyOpen = false;
    }
    state.received += 1;
    state.viewSeen += 1;
    if (!history) state.arrivals.push(performance.now());
    if (state.conn !== 'live') setConn('live');
    noteDataKeys(msg);
    accept({ kind: 'row', msg, id, history });
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
    if (state.resetTimer) clearTimeout(state.resetTimer);
    setStatus('reset', 'The server reset the stream: ' + reason);
    state.resetTimer = setTimeout(() => {
      state.resetTimer = null;
      const es = state.es;
      if (es && es.readyState === EventSource.OPEN) setConn('live');
      else setStatus(state.conn === 'live' ? 'reconnecting' : state.conn);
    }, RESET_SHOW_MS);
    showNotice('The server reset the stream' + (reason ? ' (' + reason + ')' : '') +
      '. Changes before this point may be missing from the table; sessions were reloaded.', 'warn');
    accept({ kind: 'reset', reason, id: state.lastId });
    loadSessions(true);
    if (state.detail) openSession(state.detail.id);
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
      if (state.buffer.length > state.maxRows) state.buffer.splice(0, state.buffer.length - state.maxRows);
      updatePausedCount();
      return;
    }
    state.pending.push(item);
    if (state.pending.length > state.maxRows) state.pending.splice(0, state.pending.length - state.maxRows);
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
      frag.appendChild(makeRow(item.msg, item.id, !item.history));
      const sid = item.msg.session_id;
      if (state.detail && sid === state.detail.id) touchedOpenSession = true;
      if (typeof sid === 'string' && !state.sessions.has(sid)) unknownSession = true;
      else if (typeof sid === 'string') touchSessionItem(item.msg);
    }
    const added = frag.childNodes.length;
    body.insertBefore(frag, body.firstChild);
    while (body.rows.length > state.maxRows) body.deleteRow(-1);
    markClipped(Array.prototype.slice.call(body.rows, 0, added));
    updateFeedCount();
    updateEps();
    if (unknownSession) scheduleSessionsRefresh();
    if (touchedOpenSession) scheduleDetailRefresh();
  }

  function makeRow(msg, id, fresh) {
    const tr = el('tr', fresh ? 'row fresh' : 'row');
    tr.dataset.testid = 'feed-row';
    const type = typeof msg.type === 'string' ? msg.type : '?';
    tr.dataset.type = type;
    if (id) tr.dataset.position = id;
    if (typeof msg.session_id === 'string') tr.dataset.session = msg.session_id;
    if (typeof msg.name === 'string') tr.dataset.name = msg.name;

    // The entry's own time, readable; the stream position is for machines and
    // lives in the tooltip (and data-position).
    const tsCell = el('td', 'c-ts');
    tsCell.dataset.label = 'Time';
    const time = el('time', null, isoTime(msg.timestamp));
    if (typeof msg.timestamp === 'number') time.dateTime = isoTime(msg.timestamp);
    time.title = (typeof msg.timestamp === 'number' ? msg.timestamp + ' ms since the epoch' : 'no timestamp') +
      (id ? ' · stream position ' + id : '');
    tsCell.appendChild(time);
    tr.appendChild(tsCell);

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

    const nameCell = el('td', 'c-name');
    nameCell.dataset.label = 'Name';
    if (typeof msg.name === 'string') {
      const name = el('span', 'clip name', msg.name);
      name.title = msg.name;
      nameCell.appendChild(name);
    }
    tr.appendChild(nameCell);

    tr.appendChild(makeDataCell(msg, 'c-data'));
    return tr;
  }

  function makeDataCell(obj, className) {
    const td = el('td', className);
    td.dataset.label = 'Data';
    if (Object.prototype.hasOwnProperty.call(obj, 'data')) {
      const text = compactJson(obj.data);
      const long = text.length > DATA_PREVIEW;
      const code = el('code', 'clip data', long ? text.slice(0, DATA_PREVIEW) + '…' : text);
      code.title = long ? text.slice(0, 2000) + '…' : text;
      if (long) fullText.set(code, text);
      td.appendChild(code);
    }
    return td;
  }

  /* ------------------------------------------------------ cut-off values */

  // Any value the layout cuts off (a name or data wider than its column) is marked
  // and expands on click, Enter or Space; a second click folds it again.
  const fullText = new WeakMap(); // data cells whose text was shortened to DATA_PREVIEW

  function isCut(node) {
    return fullText.has(node) || node.scrollWidth > node.clientWidth + 1;
  }

  function markClipped(rows) {
    rows.forEach((row) => {
      row.querySelectorAll('.clip:not(.expanded)').forEach((node) => {
        if (isCut(node)) {
          node.dataset.clipped = 'true';
          node.tabIndex = 0;
          node.setAttribute('role', 'button');
          node.setAttribute('aria-expanded', 'false');
        } else if (node.dataset.clipped) {
          delete node.dataset.clipped;
          node.removeAttribute('tabindex');
          node.removeAttribute('role');
          node.removeAttribute('aria-expanded');
        }
      });
    });
  }

  function toggleClip(node) {
    if (!node.classList.contains('expanded') && !isCut(node)) return false;
    const open = node.classList.toggle('expanded');
    node.setAttribute('aria-expanded', String(open));
    const full = fullText.get(node);
    if (full !== undefined) node.textContent = open ? full : full.slice(0, DATA_PREVIEW) + '…';
    if (!open) markClipped([node.parentNode]);
    return true;
  }

  function onClipEvent(ev) {
    if (ev.type === 'keydown' && ev.key !== 'Enter' && ev.key !== ' ') return;
    const node = ev.target.closest && ev.target.closest('.clip');
    if (!node) return;
    if (window.getSelection && String(window.getSelection()).length && ev.type === 'click') return; // selecting text
    if (toggleClip(node)) ev.preventDefault();
  }

  let remarkTimer = null;
  function remarkAll() {
    if (remarkTimer) clearTimeout(remarkTimer);
    remarkTimer = setTimeout(() => {
      remarkTimer = null;
      markClipped(Array.prototype.slice.call($('feed-body').rows));
      markClipped(Array.prototype.slice.call($('tree-body').rows));
    }, 150);
  }

  function makeResetRow(item) {
    const tr = el('tr', 'reset-row');
    tr.dataset.testid = 'reset-row';
    const td = el('td', null, '⟲ stream reset' + (item.reason ? ' (' + item.reason + ')' : '') +
      (item.id ? ' at position ' + item.id : '') + ' — changes before this line may be missing');
    td.colSpan = 5;
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
    state.maxRows = MAX_ROWS;
    $('feed-older-status').textContent = '';
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
      if (state.pending.length > state.maxRows) state.pending.splice(0, state.pending.length - state.maxRows);
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

  /* ------------------------------------------------------- load older */

  // "Load older" asks /database_events for a larger ?tail= (what this view has seen
  // plus OLDER_PAGE, with the same filters) over fetch(), keeps the entries before the
  // oldest row shown and stops reading as soon as the stream reaches that row. When
  // the tail did not reach back that far (a reset skipped entries), it doubles, up to
  // the server's limit of 10,000.
  async function loadOlder() {
    if (state.olderLoading) return;
    const status = $('feed-older-status');
    const rows = $('feed-body').querySelectorAll('tr[data-position]');
    let bound = rows.length ? rows[rows.length - 1].dataset.position : state.lastId;
    const inclusive = !rows.length; // an emptied table: the newest entry seen is wanted too
    if (!bound) {
      status.textContent = 'Nothing older is stored.';
      return;
    }
    state.olderLoading = true;
    $('feed-older').disabled = true;
    status.textContent = 'Loading…';
    try {
      let n = Math.min(TAIL_MAX, state.viewSeen + OLDER_PAGE + 1);
      let got;
      for (;;) {
        got = await readTailBefore(n, bound, inclusive);
        if (got.reached || n >= TAIL_MAX) break;
        n = Math.min(TAIL_MAX, n * 2);
      }
      if (!got.reached && !got.older.length) {
        status.textContent = 'Older entries are beyond the 10,000 newest the stream can return; open /?last_event_id=<position> to replay from a position.';
        return;
      }
      const older = got.older.slice(-OLDER_PAGE);
      if (!older.length) {
        status.textContent = 'Nothing older is stored' + (describeFiltersShort() ? ' for these filters.' : '.');
        return;
      }
      appendOlder(older);
      status.textContent = older.length + ' older ' + (older.length === 1 ? 'entry' : 'entries') + ' added below.';
    } catch (e) {
      if (e instanceof AuthError) showTokenPanel(state.token ? 'The read token was rejected.' : '');
      status.textContent = 'Could not load older entries: ' + e.message;
    } finally {
      state.olderLoading = false;
      $('feed-older').disabled = false;
    }
  }

  function describeFiltersShort() {
    const f = state.filters;
    return f.session || f.names.length || f.types.length;
  }

  // Reads the tail stream until an entry at (or past) `bound`; everything before it is older.
  async function readTailBefore(n, bound, inclusive) {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), OLDER_TIMEOUT_MS);
    const older = [];
    try {
      const res = await fetch(streamUrl(null, n), {
        headers: { Accept: 'text/event-stream' }, cache: 'no-store', credentials: 'same-origin', signal: ctrl.signal,
      });
      if (res.status === 401) throw new AuthError('read token required');
      if (!res.ok || !res.body) throw new HttpError(res.status, res.status + ' ' + res.statusText);
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = '';
      let first = true;
      for (;;) {
        const chunk = await reader.read();
        if (chunk.done) return { older, reached: false };
        buf += decoder.decode(chunk.value, { stream: true }).replace(/\r\n?/g, '\n');
        let cut;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const msg = parseSseBlock(buf.slice(0, cut));
          buf = buf.slice(cut + 2);
          if (!msg || msg.event || !POS_RE.test(msg.id)) continue; // comments, retry, resets
          const atBound = msg.id === bound;
          if (atBound || positionAfter(msg.id, bound)) {
            if (atBound && inclusive) older.push(msg);
            // The tail began after the bound: it did not reach back far enough.
            return { older, reached: atBound || !first };
          }
          first = false;
          older.push(msg);
        }
      }
    } finally {
      clearTimeout(timer);
      ctrl.abort();
    }
  }

  function parseSseBlock(block) {
    const out = { id: '', event: '', data: [] };
    let any = false;
    block.split('\n').forEach((line) => {
      if (!line || line[0] === ':') return;
      const i = line.indexOf(':');
      const key = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? '' : line.slice(i + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (key === 'data') { out.data.push(value); any = true; } else if (key === 'id') out.id = value;
      else if (key === 'event') out.event = value;
    });
    if (!any) return null;
    try { out.msg = JSON.parse(out.data.join('\n')); } catch (e) { return null; }
    return out;
  }

  function appendOlder(entries) {
    const body = $('feed-body');
    state.maxRows = Math.min(ROWS_CEILING, Math.max(state.maxRows, body.rows.length + entries.length));
    const frag = document.createDocumentFragment();
    for (let i = entries.length - 1; i >= 0; i--) frag.appendChild(makeRow(entries[i].msg, entries[i].id, false));
    body.appendChild(frag);
    state.viewSeen += entries.length;
    while (body.rows.length > state.maxRows) body.deleteRow(-1);
    markClipped(Array.prototype.slice.call(body.rows, -entries.length));
    updateFeedCount();
  }

  /* ------------------------------------------------------------- views */

  const VIEWS = ['live', 'analytics'];
  const viewListeners = [];
  const dataKeyListeners = [];

  function showView(name) {
    if (VIEWS.indexOf(name) < 0) name = 'live';
    VIEWS.forEach((v) => {
      $('view-' + v).hidden = v !== name;
      $('tab-' + v).setAttribute('aria-selected', String(v === name));
    });
    document.body.dataset.view = name;
    const hash = name === 'live' ? '' : '#' + name;
    if (window.location.hash !== hash) {
      try { window.history.replaceState(null, '', window.location.pathname + window.location.search + hash); } catch (e) { /* ignore */ }
    }
    if (name === 'live') remarkAll();
    viewListeners.forEach((fn) => fn(name));
  }

  /* ---------------------------------------------------------- sessions */

  // Returns 'auth' when a token is needed, true on success, false on other errors.
  async function loadSessions(fromStart) {
    if (state.sessionsLoading && !fromStart) return false;
    state.sessionsLoading = true;
    const status = $('sessions-status');
    const q = sessionsQuery();
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
      status.textContent = state.sessions.size ? (state.search ? 'Sessions that match the search, newest first.' : '')
        : state.search ? 'No session matches the search.' : 'No sessions yet.';
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

  function sessionsQuery() {
    const q = new URLSearchParams(state.search || undefined);
    q.set('limit', String(SESSION_PAGE));
    return q;
  }

  // The session search form as /sessions filters; a string is what is wrong with it.
  function readSearch() {
    const q = new URLSearchParams();
    $('search-name').value.split(',').map((n) => n.trim()).filter((n) => n).forEach((n) => q.append('name', n));
    const lines = $('search-data').value.split('\n').map((l) => l.trim()).filter((l) => l);
    for (const line of lines) {
      if (line.indexOf(':') < 1) return 'Each data line is key:value, e.g. plan:pro.';
      q.append('data', line);
    }
    for (const [id, key] of [['search-from', 'from'], ['search-to', 'to']]) {
      const v = $(id).value;
      if (!v) continue;
      const ms = Date.parse(v + (v.length === 16 ? ':00' : '') + 'Z');
      if (!isFinite(ms)) return 'Times are UTC dates and times.';
      q.set(key, String(ms));
    }
    if ($('search-ended').value) q.set('ended', $('search-ended').value);
    for (const [id, key] of [['search-min', 'min_duration_ms'], ['search-max', 'max_duration_ms']]) {
      const v = $(id).value;
      if (v === '') continue;
      const n = Number(v);
      if (!isFinite(n) || n < 0) return 'Durations are seconds, 0 or more.';
      q.set(key, String(Math.round(n * 1000)));
    }
    return q;
  }

  async function onSearchSubmit(ev) {
    ev.preventDefault();
    const q = readSearch();
    const err = $('search-error');
    if (typeof q === 'string') { err.textContent = q; err.hidden = false; return; }
    err.hidden = true;
    state.search = [...q.keys()].length ? q : null;
    $('sessions-title').textContent = state.search ? 'Found sessions' : 'Recent sessions';
    const ok = await loadSessions(true);
    if (ok === false && state.search) {
      err.textContent = $('sessions-status').textContent;
      err.hidden = false;
    }
  }

  function clearSearch() {
    $('session-search').reset();
    $('search-error').hidden = true;
    state.search = null;
    $('sessions-title').textContent = 'Recent sessions';
    loadSessions(true);
  }

  function noteDataKeys(msg) {
    if (msg.type !== 'EVENT' || typeof msg.name !== 'string' || !msg.data || typeof msg.data !== 'object' || Array.isArray(msg.data)) return;
    let keys = state.dataKeys.get(msg.name);
    if (!keys) {
      if (state.dataKeys.size >= 1000) return;
      keys = new Set();
      state.dataKeys.set(msg.name, keys);
    }
    const before = keys.size;
    for (const k of Object.keys(msg.data)) if (keys.size < 200) keys.add(k);
    // A key list already on screen (the breakdown's) grows with the feed, not only when
    // it is opened again: the feed may bring a name's first events after it was chosen.
    if (keys.size > before) dataKeyListeners.forEach((fn) => fn(msg.name));
  }

  // Refresh the newest page in place: new sessions go on top, known ones are updated.
  async function refreshSessionsTop() {
    if (state.sessionsLoading) { scheduleSessionsRefresh(); return; }
    state.sessionsLoading = true;
    try {
      const body = await apiGet('/sessions', sessionsQuery());
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
      if (!state.search) $('sessions-status').textContent = state.sessions.size ? '' : 'No sessions yet.';
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
      // The date is in the facts above; the row shows the time of day (full in the tooltip).
      const ts = el('td', 'c-ts', typeof c.timestamp === 'number' ? isoTime(c.timestamp).slice(11, 23) : '—');
      ts.dataset.label = 'Time';
      if (typeof c.timestamp === 'number') ts.title = isoTime(c.timestamp) + ' · ' + c.timestamp + ' ms since the epoch';
      tr.appendChild(ts);
      const nm = el('td', 'c-name');
      nm.dataset.label = 'Name';
      const name = typeof c.name === 'string' ? c.name : '';
      // Swatch and name share one line: the name wraps or clips, never the swatch alone.
      const line = el('span', 'name-line');
      const swatch = el('span', 'swatch');
      swatch.style.setProperty('--hue', String(nameHue(name)));
      line.appendChild(swatch);
      const text = el('span', 'clip name', name);
      text.title = name;
      line.appendChild(text);
      nm.appendChild(line);
      tr.appendChild(nm);
      tr.appendChild(makeDataCell(c, 'c-data'));
      rows.appendChild(tr);
    });
    tbody.appendChild(rows);
    markClipped(Array.prototype.slice.call(tbody.rows));
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
    $('tail-rows').textContent = String(TAIL_ON_OPEN);
    $('pause-btn').addEventListener('click', togglePause);
    $('filters').addEventListener('submit', onFilterSubmit);
    $('filter-clear').addEventListener('click', clearFilters);
    $('feed-clear').addEventListener('click', () => { clearFeed(); });
    $('feed-older').addEventListener('click', loadOlder);
    ['feed-body', 'tree-body'].forEach((id) => {
      $(id).addEventListener('click', onClipEvent);
      $(id).addEventListener('keydown', onClipEvent);
    });
    window.addEventListener('resize', remarkAll);
    // Column widths also change without a window resize (a scrollbar, the sessions list).
    if (window.ResizeObserver) {
      const watch = new ResizeObserver(remarkAll);
      document.querySelectorAll('.table-wrap').forEach((node) => watch.observe(node));
    }
    $('tab-live').addEventListener('click', () => showView('live'));
    $('tab-analytics').addEventListener('click', () => showView('analytics'));
    window.addEventListener('hashchange', () => showView(window.location.hash.slice(1)));
    $('feed-body').addEventListener('click', onSessionClick);
    $('sessions-list').addEventListener('click', onSessionClick);
    $('sessions-more').addEventListener('click', () => loadSessions(false));
    $('sessions-refresh').addEventListener('click', () => loadSessions(true));
    $('session-search').addEventListener('submit', onSearchSubmit);
    $('search-clear').addEventListener('click', clearSearch);
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
    showView(window.location.hash.slice(1));
    const ok = await loadSessions(true);
    if (ok === 'auth') return; // the token form opens the stream once a token works
    openStream(false);
  }

  // Retention: one line saying since when entries are retained (/readyz is open, no token).
  async function showRetained() {
    const line = document.getElementById('retained');
    if (!line) return;
    try {
      const res = await fetch('/readyz', { cache: 'no-store' });
      const body = await res.json();
      if (typeof body.retained_from === 'number') {
        line.textContent = `Oldest retained entry: ${new Date(body.retained_from).toISOString()}`;
        line.hidden = false;
      }
    } catch (_err) {
      // not ready or offline: the line keeps what it showed
    }
  }
  showRetained();
  setInterval(showRetained, 30000);

  // Small hook for tests and the curious: read-only view of the page state.
  // Also what analytics.js builds on (same token, same helpers, the feed's filter).
  window.eventMonitor = {
    get lastId() { return state.lastId; },
    get received() { return state.received; },
    get paused() { return state.paused; },
    get maxRows() { return state.maxRows; },
    tailOnOpen: TAIL_ON_OPEN,
    api: {
      get: apiGet,
      withToken,
      AuthError,
      askForToken: () => showTokenPanel(state.token ? 'The read token was rejected.' : ''),
      isoTime,
      formatDuration,
      nameHue,
      el,
      showView,
      onView: (fn) => viewListeners.push(fn),
      dataKeys: (name) => [...(state.dataKeys.get(name) || [])].sort(),
      onDataKeys: (fn) => dataKeyListeners.push(fn), // fn(name): the feed brought a new data key for name
      filterFeedByName: (name) => {
        applyFilters({ session: '', names: [name], types: [] });
        showView('live');
      },
    },
  };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
