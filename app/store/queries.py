"""Every SQL statement the service runs, named. Schema lives in schema/*.sql."""

from __future__ import annotations

# --- migrations ---------------------------------------------------------------
MIGRATION_LOCK = "SELECT pg_advisory_lock(727401, 0)"
MIGRATION_UNLOCK = "SELECT pg_advisory_unlock(727401, 0)"
CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())
"""
APPLIED_MIGRATIONS = "SELECT version FROM schema_migrations"
RECORD_MIGRATION = "INSERT INTO schema_migrations (version) VALUES ($1) ON CONFLICT DO NOTHING"

# --- health -------------------------------------------------------------------
PING = "SELECT 1"

# --- write path ---------------------------------------------------------------
# Names are sorted by the caller so concurrent upserts lock index entries in one
# order and cannot deadlock. A name committed concurrently by another writer is
# invisible to this statement's snapshot: the caller repeats for what is missing.
UPSERT_EVENT_NAMES = """
WITH inserted AS (
    INSERT INTO event_names (name) SELECT unnest($1::text[])
    ON CONFLICT (name) DO NOTHING
    RETURNING id, name)
SELECT id, name FROM inserted
UNION ALL
SELECT id, name FROM event_names WHERE name = ANY($1::text[])
"""

# Returns the (scope, batch_id) pairs that were new; the others are duplicates.
CLAIM_BATCH_IDS = """
INSERT INTO ingest_batches (scope, batch_id, accepted)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[])
ON CONFLICT DO NOTHING
RETURNING scope::text, batch_id
"""

BEGIN = "BEGIN"
COMMIT = "COMMIT"

# The first statement of every write transaction: its transaction id, which a fresh
# connection can look up when the connection is lost during COMMIT (was it
# committed?), and a bound on waiting for the insert lock ($1: e.g. '10s').
BEGIN_WRITE = "SELECT txid_current(), set_config('lock_timeout', $1, true)"
# 'committed', 'aborted', 'in progress' (or NULL when too old to know).
TXID_STATUS = "SELECT txid_status($1)"
# Whether the row a write transaction ($6, 64-bit) copied first is stored by it: a
# "committed" from txid_status alone is not proof after a crash. A transaction whose
# WAL never reached the disk leaves no trace, the restarted server hands its id to
# the next transaction, and txid_status then answers for that one (seen once in
# test_retention's crash test: an ACKed group of 19 batches was not stored). The
# row's content and its xmin together are (events_session_ts finds it).
WRITE_STORED = """
SELECT EXISTS (SELECT 1 FROM events
                WHERE session_id = $1::uuid AND ts = $3 AND type = $2 AND name_id IS NOT DISTINCT FROM $4
                  AND data::text IS NOT DISTINCT FROM $5 AND xmin = ($6::bigint % 4294967296)::text::xid)
"""
# Forces an unknown outcome to resolve: a backend still inside its transaction
# aborts it when terminated (one already committing finishes its commit first).
# Only that backend, and only while it still runs that transaction ($2, 64-bit).
TERMINATE_WRITER = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
 WHERE pid = $1 AND backend_xid::text = ($2::bigint % 4294967296)::text
"""

# Who holds the insert lock (001's events_serialize_writers takes advisory lock
# 727401,1), since when, and how many backends wait behind it. Only when its
# transaction has been open for more than $1 seconds: the service's own writers
# hold it for milliseconds.
INSERT_LOCK_HOLDER = """
SELECT a.pid, a.application_name, a.state, a.xact_start,
       extract(epoch FROM now() - a.xact_start)::float8 AS held_seconds,
       (SELECT count(*) FROM pg_locks w
         WHERE w.locktype = 'advisory' AND w.classid = 727401 AND w.objid = 1 AND NOT w.granted) AS waiting
  FROM pg_locks l
  JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.classid = 727401 AND l.objid = 1 AND l.objsubid = 2 AND l.granted
   AND a.xact_start < now() - make_interval(secs => $1)
"""

# batch_ids older than the retention window, a bounded slice per statement so the
# prune never holds many row locks at once.
PRUNE_BATCH_IDS = """
DELETE FROM ingest_batches
 WHERE ctid = ANY(ARRAY(SELECT ctid FROM ingest_batches
                         WHERE claimed_at < now() - make_interval(secs => $1)
                         LIMIT $2))
"""

EVENTS_TABLE = "events"
EVENTS_COPY_COLUMNS = ("session_id", "type", "ts", "name_id", "data")

# Rejected batches (app/ingest/rejected.py, schema/002_rejected_batches.sql): kept for
# inspection, pruned to the newest $1 rows by id (ids only grow, so "oldest first").
REJECTED_INSERT = """
INSERT INTO rejected_batches
       (received_at, connection, session_id, batch, batch_id, error, message, frame, frame_bytes)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""
REJECTED_PRUNE = """
DELETE FROM rejected_batches
 WHERE id <= (SELECT max(id) FROM rejected_batches) - $1
"""

# --- reads: sessions ------------------------------------------------------------
# LEFT JOINs: a session with a start and no EVENT yet is a 200 with no children,
# never a 404. Keyset paging on (ts, position) = "by timestamp, then arrival".
SESSION_TREE_PAGE = """
SELECT s.start_ms, s.end_ms, s.event_count, e.position, e.ts, n.name, e.data
  FROM sessions s
  LEFT JOIN events e
         ON e.session_id = s.id AND e.type = 'EVENT' AND (e.ts, e.position) > ($2, $3)
  LEFT JOIN event_names n ON n.id = e.name_id
 WHERE s.id = $1
 ORDER BY e.ts, e.position
 LIMIT $4
"""

# A session's EVENTs encoded by PostgreSQL as the JSON the page reads would give
# byte for byte (to_json escapes a text as orjson does; data is spliced as stored),
# comma-separated, as bytes; '' for none. The LATERAL keeps to_json inside the name
# lookup, which the planner memoizes: once per distinct name, not per EVENT (~0.4 ms
# of 1,000). Used by the whole-tree read and by the tree store, which must agree
# byte for byte (test_session_store.py).
ENCODED_CHILDREN = """
         convert_to(coalesce(
           (SELECT string_agg(
                     '{"type":"EVENT","timestamp":' || e.ts || ',"name":' || coalesce(n.json, 'null')
                     || CASE WHEN e.data IS NULL THEN '}' ELSE ',"data":' || e.data::text || '}' END,
                     ',' ORDER BY e.ts, e.position)
              FROM events e
              LEFT JOIN LATERAL (SELECT to_json(n.name)::text AS json FROM event_names n WHERE n.id = e.name_id OFFSET 0) n
                ON true
             WHERE e.session_id = s.id AND e.type = 'EVENT'),
           ''), 'UTF8')"""

# Session s lost entries to retention: it was first seen before retained_from.
_LOST_TO_RETENTION = "EXISTS (SELECT 1 FROM retention_state r WHERE s.first_seen < r.retained_from)"

# A stored tree is current when it was built at the session's present version and
# the session lost nothing to retention (schema/008_session_trees.sql), all read in
# this statement's snapshot.
_STORED_CURRENT = f"""
        t.event_count = s.event_count
        AND t.start_ms IS NOT DISTINCT FROM s.start_ms
        AND t.end_ms IS NOT DISTINCT FROM s.end_ms
        AND NOT {_LOST_TO_RETENTION}"""

# A whole tree of fewer than $2 EVENTs in one round trip: the stored one when it is
# current (one row, no events read), else encoded from events (ENCODED_CHILDREN),
# so no row reaches Python either way. The CASE evaluates the subquery only when
# no stored tree matched. event_count comes from the same snapshot as the events;
# at or above $2, children is NULL and the caller streams the pages instead.
SESSION_TREE_WHOLE = f"""
SELECT s.start_ms, s.end_ms, s.event_count,
       CASE WHEN t.session_id IS NOT NULL THEN t.children
            WHEN s.event_count < $2 THEN {ENCODED_CHILDREN}
       END AS children,
       t.session_id IS NOT NULL AS stored
  FROM sessions s
  LEFT JOIN session_trees t ON t.session_id = s.id AND {_STORED_CURRENT}
 WHERE s.id = $1
"""

# What a cached tree is checked against (app/reads/tree_cache.py).
SESSION_VERSION = "SELECT start_ms, end_ms, event_count FROM sessions WHERE id = $1"

RECENT_SESSIONS = """
SELECT id::text AS session_id, start_ms, end_ms, event_count, seen
  FROM sessions
 WHERE seen < $1
 ORDER BY seen DESC
 LIMIT $2
"""

# --- reads: the stream ----------------------------------------------------------
STREAM_BOUNDS = """
SELECT (SELECT base FROM stream_meta) AS base,
       (SELECT max(position) FROM events) AS head,
       (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
          FROM events_position_seq) AS allocated
"""

# The hub's position when no client listens (an index probe, not a scan).
STREAM_HEAD = "SELECT max(position) FROM events"

# The hub's read: everything after what it has fanned out, in position order.
STREAM_AFTER = """
SELECT e.position, e.type, e.session_id::text, e.ts, n.name, e.data
  FROM events e
  LEFT JOIN event_names n ON n.id = e.name_id
 WHERE e.position > $1
 ORDER BY e.position
 LIMIT $2
"""

# A resuming client's replay, bounded above by what the hub had fanned out when
# the client subscribed; filters as arrays, NULL meaning "any".
STREAM_REPLAY = """
SELECT e.position, e.type, e.session_id::text, e.ts, n.name, e.data
  FROM events e
  LEFT JOIN event_names n ON n.id = e.name_id
 WHERE e.position > $1 AND e.position <= $2
   AND ($3::uuid[] IS NULL OR e.session_id = ANY($3::uuid[]))
   AND ($4::text[] IS NULL OR n.name = ANY($4::text[]))
   AND ($5::text[] IS NULL OR e.type = ANY($5::text[]))
 ORDER BY e.position
 LIMIT $6
"""

# ?tail=N on a fresh connection: the last $5 matching entries at or below $1 (the
# head committed when the read starts, never below the subscriber's start
# position), returned oldest first; the live stream continues after $1. The inner
# scan walks the primary key backwards and stops after $5 matches.
STREAM_TAIL = """
SELECT * FROM (
    SELECT e.position, e.type, e.session_id::text, e.ts, n.name, e.data
      FROM events e
      LEFT JOIN event_names n ON n.id = e.name_id
     WHERE e.position <= $1
       AND ($2::uuid[] IS NULL OR e.session_id = ANY($2::uuid[]))
       AND ($3::text[] IS NULL OR n.name = ANY($3::text[]))
       AND ($4::text[] IS NULL OR e.type = ANY($4::text[]))
     ORDER BY e.position DESC
     LIMIT $5) AS latest
 ORDER BY position
"""

LISTEN_CHANNEL = "eventservice_events"

# --- reads: analytics (app/routes/stats.py, schema/004_stats.sql) ------------------
# A range [from, to) of EVENTs is read as its whole hours from the hourly rollup
# ($1, $2), the whole minutes outside them from the per-minute rollup ($3–$6), and
# the partial minutes at its edges from events itself ($7–$10); (0, 0) marks an
# empty part, see app/reads/stats.py split_range. The rollups count the events up
# to the fold's watermark $11 (STATS_WATERMARK, schema/005_stats_sessions.sql); the
# events past it (about a second of ingest, by primary key) count wherever they lie
# among the whole minutes and hours. Sessions use minutes and edges only ($1–$6),
# plus the trigger's deltas not yet folded. Every read of one response runs in one
# REPEATABLE READ snapshot, so the figures agree with each other.

# Moves the session deltas the trigger appended into the rollup, and counts the events
# since the last fold (schema/005_stats_sessions.sql); app/store/watch.py.
STATS_FOLD = "SELECT stats_fold()"
# The same in a slice of at most $1 events, one short transaction each (app/store/watch.py).
STATS_FOLD_UP_TO = "SELECT stats_fold_up_to($1)"
# The breakdown rollups' share (schema/010): each pair's next $1 events up to the
# fold's watermark; true once every pair has reached it.
BREAKDOWN_FOLD_UP_TO = "SELECT breakdown_fold_up_to($1)"

# For the stats transaction only: room to sort and hash in memory, and a plan made
# for each request's own range. A prepared statement otherwise switches to one
# generic plan after five runs, which does not know whether a range holds a
# thousand sessions or all of them (the 30-day summary: 320 ms custom, 550 ms
# generic, bench stats).
STATS_SETTINGS = "SET LOCAL work_mem = '64MB'; SET LOCAL plan_cache_mode = force_custom_plan"

# The last position the fold counted: a parameter of the queries below rather than a
# subquery, so their plans know how few events lie past it.
STATS_WATERMARK = "SELECT position FROM stats_folded"

_EVENTS_IN_RANGE = """
    SELECT hour_ms AS ts, name_id, events AS n FROM stats_event_hours
     WHERE hour_ms >= $1 AND hour_ms < $2
    UNION ALL
    SELECT minute_ms, name_id, events FROM stats_event_minutes
     WHERE minute_ms >= $3 AND minute_ms < $4
    UNION ALL
    SELECT minute_ms, name_id, events FROM stats_event_minutes
     WHERE minute_ms >= $5 AND minute_ms < $6
    UNION ALL
    SELECT ts, name_id, 1 FROM events
     WHERE position > $11 AND type = 'EVENT'
       AND (ts >= $1 AND ts < $2 OR ts >= $3 AND ts < $4 OR ts >= $5 AND ts < $6)
    UNION ALL
    SELECT ts, name_id, 1 FROM events WHERE type = 'EVENT' AND ts >= $7 AND ts < $8
    UNION ALL
    SELECT ts, name_id, 1 FROM events WHERE type = 'EVENT' AND ts >= $9 AND ts < $10
"""

_SESSIONS_IN_RANGE = """
    SELECT minute_ms AS ts, started AS n FROM stats_session_minutes
     WHERE minute_ms >= $1 AND minute_ms < $2
    UNION ALL
    SELECT minute_ms, started FROM stats_session_deltas
     WHERE minute_ms >= $1 AND minute_ms < $2
    UNION ALL
    SELECT start_ms, 1 FROM sessions WHERE start_ms >= $3 AND start_ms < $4
    UNION ALL
    SELECT start_ms, 1 FROM sessions WHERE start_ms >= $5 AND start_ms < $6
"""

# EVENTs per name in the range, most first, ties by name in code point order.
STATS_NAME_COUNTS = f"""
SELECT n.id AS name_id, n.name, c.events
  FROM (SELECT name_id, sum(n)::bigint AS events FROM ({_EVENTS_IN_RANGE}) AS x GROUP BY name_id) AS c
  JOIN event_names n ON n.id = c.name_id
 WHERE c.events > 0
 ORDER BY c.events DESC, n.name COLLATE "C"
 LIMIT $12
"""

# EVENTs in the range and how many distinct names they carry.
STATS_EVENT_TOTALS = f"""
SELECT coalesce(sum(events), 0)::bigint AS events, count(*) AS names
  FROM (SELECT name_id, sum(n) AS events FROM ({_EVENTS_IN_RANGE}) AS x GROUP BY name_id) AS c
 WHERE c.events > 0
"""

# Per bucket ($12: its size in ms) in one pass over the range: the total of every
# name (is_total) and the count of each name of $13 (the series). Timestamps are
# >= 0, so integer division floors; an hourly row lands in its hour's bucket, which
# is why minute buckets are given no hours.
STATS_EVENT_BUCKETS = f"""
SELECT bucket, series, GROUPING(series) = 1 AS is_total, sum(n)::bigint AS n
  FROM (SELECT (ts / $12) * $12 AS bucket,
               CASE WHEN name_id = ANY($13::int[]) THEN name_id END AS series,
               n
          FROM ({_EVENTS_IN_RANGE}) AS x) AS y
 GROUP BY GROUPING SETS ((bucket), (bucket, series))
"""

STATS_SESSION_BUCKETS = f"""
SELECT (ts / $7) * $7 AS bucket, sum(n)::bigint AS n
  FROM ({_SESSIONS_IN_RANGE}) AS x
 GROUP BY 1
 HAVING sum(n) <> 0
"""

# Distinct sessions with an EVENT of each of some names ($3) in a range, split as in
# app/reads/stats.py hour_split: whole hours [$1, $2) and the partial hours at its
# ends, [$4, $5) and [$6, $7). The whole hours come from stats_name_hours
# (schema/005_stats_sessions.sql), which covers the events up to the fold
# watermark: each pair present there counts once, at its first hour in the range,
# whose previous presence lies before $1. Then the pairs of the edges (BRIN index
# events_ts_brin, at most two hours of events) and of the events past the
# watermark $8 (STATS_WATERMARK; by primary key, about a second of ingest)
# count when they have no presence in the whole hours (a primary-key probe each).
# The watermark is a parameter, not a subquery, so the plan knows how few events
# lie past it (as a subquery it was estimated at a third of all events, and the
# plan hashed every presence of the range instead of probing: 76 ms -> 1.5 s).
STATS_NAME_SESSIONS = """
SELECT name_id, sum(n)::bigint AS sessions
  FROM (SELECT name_id, sessions AS n FROM stats_name_hours
         WHERE hour_ms >= $1 AND hour_ms < $2 AND prev_hour_ms < $1 AND name_id = ANY($3::int[])
        UNION ALL
        SELECT e.name_id, 1
          FROM (SELECT name_id, session_id FROM events
                 WHERE type = 'EVENT' AND name_id = ANY($3::int[])
                   AND (ts >= $4 AND ts < $5 OR ts >= $6 AND ts < $7)
                UNION
                SELECT name_id, session_id FROM events
                 WHERE position > $8 AND type = 'EVENT' AND name_id = ANY($3::int[]) AND ts >= $1 AND ts < $2) AS e
         WHERE NOT EXISTS (SELECT 1 FROM stats_name_session_hours p
                            WHERE p.session_id = e.session_id AND p.name_id = e.name_id
                              AND p.hour_ms >= $1 AND p.hour_ms < $2)) AS x
 GROUP BY name_id
"""


# The sessions started in [$1, $2), in one pass, grouped by their number of EVENTs and,
# for the ended ones, by fine duration bucket (width_bucket on the ~1,500 integer
# bounds $3, 2 % apart, which include each histogram bound + 1, so every bucket lies
# in one histogram bin; bucket order is value order). A few thousand groups, added
# up in app/routes/stats.py: sessions, events per session (exactly: event counts are
# the group keys), the histogram, the duration sum. Exact duration percentiles then
# need only the values of the few buckets that hold a wanted rank
# (STATS_DURATIONS_BETWEEN), not a sort of a million values. One plain GROUP BY, so
# PostgreSQL may aggregate in parallel.
STATS_SESSION_GROUPS = """
SELECT event_count,
       CASE WHEN end_ms IS NOT NULL THEN width_bucket(end_ms - start_ms, $3::bigint[]) END AS duration_bucket,
       count(*) AS sessions,
       sum(end_ms - start_ms) AS duration_sum
  FROM sessions
 WHERE start_ms >= $1 AND start_ms < $2
 GROUP BY 1, 2
"""


# The durations in up to three half-open ranges [$3, $4), [$5, $6), [$7, $8).
STATS_DURATIONS_BETWEEN = """
SELECT end_ms - start_ms AS duration
  FROM sessions
 WHERE start_ms >= $1 AND start_ms < $2 AND end_ms IS NOT NULL
   AND (end_ms - start_ms >= $3 AND end_ms - start_ms < $4
        OR end_ms - start_ms >= $5 AND end_ms - start_ms < $6
        OR end_ms - start_ms >= $7 AND end_ms - start_ms < $8)
"""

STATS_NAME_IDS = "SELECT id, name FROM event_names WHERE name = ANY($1::text[])"

# Where the next funnel chunk ends: the start of the ($3 + 1)-th session started in
# [$1, $2), by start (an index-only scan of sessions_start); null when fewer remain.
STATS_FUNNEL_CHUNK_END = """
SELECT start_ms FROM sessions WHERE start_ms >= $1 AND start_ms < $2 ORDER BY start_ms OFFSET $3 LIMIT 1
"""

# Where in time the EVENTs of the sessions started in [$1, $2) can lie (sessions.first_ts
# and last_ts, schema/005_stats_sessions.sql): bounds for STATS_FUNNEL_EVENTS.
STATS_FUNNEL_SPAN = "SELECT min(first_ts), max(last_ts) FROM sessions WHERE start_ms >= $1 AND start_ms < $2"

# The funnel's input: for each session started in [$1, $2), its EVENTs named by a
# step ($3), in timestamp-then-arrival order. Sessions without one have no row. The
# events are read between $4 and $5 (STATS_FUNNEL_SPAN, which holds all of them)
# through the BRIN index, not all of them, and hashed against the sessions.
STATS_FUNNEL_EVENTS = """
SELECT array_agg(e.name_id ORDER BY e.ts, e.position) AS names,
       array_agg(e.ts ORDER BY e.ts, e.position) AS stamps
  FROM events e
  JOIN sessions s ON s.id = e.session_id
 WHERE s.start_ms >= $1 AND s.start_ms < $2
   AND e.ts >= $4 AND e.ts <= $5
   AND e.type = 'EVENT' AND e.name_id = ANY($3::int[])
 GROUP BY e.session_id
"""

# --- reads: finding sessions (GET /sessions filters, app/reads/find.py) -------------
# The page of sessions first seen before $1 (newest first, $2 rows) that pass every
# filter; a NULL parameter is no filter (plans are custom per request: STATS_SETTINGS).
# $3/$4: start in [from, to); $5: ended; $6/$7: end - start within [min, max];
# $8: name ids that must all be present. A (session, name) pair is read from 005's
# presences (its primary key, an index-only probe) for the events up to the fold's
# watermark $12, and from the few events past it (by primary key, hashed once).
# $9-$11: data filters as (key, jsonb, jsonb or NULL): each needs one EVENT of the
# session whose data has that key with one of those values and, with names, one of
# those names (the same event matches both). `OFFSET 0` keeps the presence probe a
# probe: without it PostgreSQL may hash all of stats_name_session_hours instead
# (470 ms for 1 M events, against a few ms for the first page, bench stats).
FIND_SESSIONS = """
SELECT s.id::text AS session_id, s.start_ms, s.end_ms, s.event_count, s.seen
  FROM sessions s
 WHERE s.seen < $1
   AND ($3::bigint IS NULL OR s.start_ms >= $3)
   AND ($4::bigint IS NULL OR s.start_ms < $4)
   AND ($5::boolean IS NULL OR (s.end_ms IS NOT NULL) = $5)
   AND ($6::bigint IS NULL OR s.end_ms - s.start_ms >= $6)
   AND ($7::bigint IS NULL OR s.end_ms - s.start_ms <= $7)
   AND NOT EXISTS (
       SELECT 1 FROM unnest($8::int[]) AS wanted (name_id)
        WHERE NOT EXISTS (SELECT 1 FROM stats_name_session_hours p
                           WHERE p.session_id = s.id AND p.name_id = wanted.name_id OFFSET 0)
          AND (s.id, wanted.name_id) NOT IN (SELECT e.session_id, e.name_id FROM events e
                                              WHERE e.position > $12 AND e.type = 'EVENT'
                                                AND e.name_id = ANY($8::int[])))
   AND NOT EXISTS (
       SELECT 1 FROM unnest($9::text[], $10::jsonb[], $11::jsonb[]) AS d (key, a, b)
        WHERE NOT EXISTS (SELECT 1 FROM events e
                           WHERE e.session_id = s.id AND e.type = 'EVENT'
                             AND (cardinality($8::int[]) = 0 OR e.name_id = ANY($8::int[]))
                             AND breakdown_value(e.data, d.key) IN (d.a, d.b)))
 ORDER BY s.seen DESC
 LIMIT $2
"""

# --- reads: GET /stats/breakdown ------------------------------------------------------
# The EVENTs of name $1 in [$2, $3), grouped by the value of data key $4 as jsonb
# (equal numbers are one value, 3 and 3.0), read from events itself in the response's
# snapshot: exact whatever wrote them and whenever they arrived. Rows: the top $5
# values (kind 0, most events first, ties by the value's jsonb text in byte order),
# then the rest (kind 1) and the events without the key or without data (kind 2),
# each with its events and distinct sessions. The events are first counted per
# (value, session), once: distinct sessions per value are then those pairs, and the
# rest's distinct sessions come from the pairs too, not from the events again (half
# the time of grouping the events themselves for 30 days, bench stats).
_BREAKDOWN_EVENTS = """
    SELECT session_id, ts, breakdown_value(data, $4::text) AS v
      FROM events
     WHERE type = 'EVENT' AND name_id = $1 AND ts >= $2 AND ts < $3
"""
STATS_BREAKDOWN = """
WITH pairs AS MATERIALIZED (
    SELECT breakdown_value(data, $4::text) AS v, session_id, count(*) AS n
      FROM events
     WHERE type = 'EVENT' AND name_id = $1 AND ts >= $2 AND ts < $3
     GROUP BY 1, 2
), groups AS (
    SELECT v, sum(n)::bigint AS events, count(*) AS sessions FROM pairs WHERE v IS NOT NULL GROUP BY v
), top AS (
    SELECT v, events, sessions, v::text COLLATE "C" AS label FROM groups ORDER BY events DESC, label LIMIT $5
)
SELECT 0 AS kind, label AS value, events, sessions FROM top
UNION ALL
SELECT 1, NULL, coalesce(sum(n), 0)::bigint, count(DISTINCT session_id) FROM pairs
 WHERE v IS NOT NULL AND NOT EXISTS (SELECT 1 FROM top WHERE top.v = pairs.v)
UNION ALL
SELECT 2, NULL, coalesce(sum(n), 0)::bigint, count(DISTINCT session_id) FROM pairs WHERE v IS NULL
"""

# The pair's rollup (schema/010_breakdown_rollups.sql), when it has one: its id and
# the last position it includes, read in the response's snapshot.
BREAKDOWN_KEY = "SELECT id, through FROM breakdown_keys WHERE name_id = $1 AND key = $2 AND given_up_at IS NULL"
# Gives the pair a rollup while fewer than $3 pairs have one; false: none for it.
BREAKDOWN_REGISTER = "SELECT breakdown_register($1, $2, $3)"
# STATS_BREAKDOWN's rows ($1: name id, $2: key, $3: limit) for a pair with a rollup ($10: its id, $11: the position it
# includes up to), split as STATS_NAME_SESSIONS: whole hours [$4, $5), partial hours
# [$6, $7) and [$8, $9). The whole hours come from the rollup for the EVENTs up to
# $11: events per value added up, distinct sessions per value as the presences in
# [$4, $5) whose previous one lies before $4. The rest (the partial hours, and the
# events past $11 in the whole hours) is read from events and counted per (value,
# session), as STATS_BREAKDOWN does; such a pair adds a session unless the rollup
# has a presence of it in the whole hours (a primary-key probe; `OFFSET 0` keeps it
# one: hashing the range's presences instead read 221 MiB for 24 h). The rest's distinct
# sessions: the presences in [$4, $5) of the values past the limit (by value, the
# presences' primary key) and the pairs read from events, counted once.
STATS_BREAKDOWN_ROLLUP = """
WITH raw AS MATERIALIZED (
    SELECT v, session_id, count(*) AS n
      FROM (SELECT breakdown_value(data, $2::text) AS v, session_id
              FROM events
             WHERE type = 'EVENT' AND name_id = $1 AND (ts >= $6 AND ts < $7 OR ts >= $8 AND ts < $9)
            UNION ALL
            SELECT breakdown_value(data, $2::text), session_id
              FROM events
             WHERE position > $11 AND type = 'EVENT' AND name_id = $1 AND ts >= $4 AND ts < $5) AS e
     GROUP BY 1, 2
), raw_ids AS MATERIALIZED (
    SELECT r.v, r.session_id, r.n,
           CASE WHEN r.v IS NULL THEN 0
                ELSE (SELECT b.id FROM breakdown_values b
                       WHERE b.key_id = $10 AND jsonb_hash(b.value) = jsonb_hash(r.v) AND b.value = r.v) END AS value_id
      FROM raw r
), rolled AS (
    SELECT value_id, sum(events) AS events, sum(sessions) AS sessions
      FROM (SELECT value_id, events, 0 AS sessions FROM breakdown_event_hours
             WHERE key_id = $10 AND hour_ms >= $4 AND hour_ms < $5
            UNION ALL
            SELECT value_id, 0, sessions FROM breakdown_session_hours
             WHERE key_id = $10 AND hour_ms >= $4 AND hour_ms < $5 AND prev_hour_ms < $4) AS h
     GROUP BY value_id
), groups AS (
    SELECT v, sum(events)::bigint AS events, sum(sessions)::bigint AS sessions
      FROM (SELECT b.value AS v, r.events, r.sessions
              FROM rolled r LEFT JOIN breakdown_values b ON b.id = r.value_id
            UNION ALL
            SELECT v, n,
                   CASE WHEN value_id IS NOT NULL
                         AND EXISTS (SELECT 1 FROM breakdown_presences p
                                      WHERE p.key_id = $10 AND p.value_id = raw_ids.value_id
                                        AND p.session_id = raw_ids.session_id AND p.hour_ms >= $4 AND p.hour_ms < $5
                                      OFFSET 0)
                        THEN 0 ELSE 1 END
              FROM raw_ids) AS x
     GROUP BY v
    HAVING sum(events) > 0
), top AS MATERIALIZED (
    SELECT v, events, sessions, v::text COLLATE "C" AS label FROM groups WHERE v IS NOT NULL ORDER BY events DESC, label LIMIT $3
), rest_ids AS (
    SELECT b.id FROM breakdown_values b
     WHERE b.key_id = $10 AND NOT EXISTS (SELECT 1 FROM top WHERE top.v = b.value)
)
SELECT 0 AS kind, label AS value, events, sessions FROM top
UNION ALL
SELECT 1, NULL,
       (SELECT coalesce(sum(events), 0) FROM groups g
         WHERE g.v IS NOT NULL AND NOT EXISTS (SELECT 1 FROM top WHERE top.v = g.v))::bigint,
       (SELECT count(DISTINCT session_id)
          FROM (SELECT p.session_id FROM rest_ids r JOIN breakdown_presences p ON p.key_id = $10 AND p.value_id = r.id
                 WHERE p.hour_ms >= $4 AND p.hour_ms < $5
                UNION ALL
                SELECT session_id FROM raw_ids r
                 WHERE r.v IS NOT NULL AND NOT EXISTS (SELECT 1 FROM top WHERE top.v = r.v)) AS s)
UNION ALL
SELECT 2, NULL, coalesce(sum(events), 0)::bigint, coalesce(sum(sessions), 0)::bigint FROM groups WHERE v IS NULL
"""

# STATS_BREAKDOWN_BUCKETS for a pair with a rollup, when a bucket ($3 ms) is whole
# hours (hour, day): the whole hours [$5, $6) from the rollup's events per hour and
# value for what it counted (up to $12), the rest from events, as STATS_BREAKDOWN_ROLLUP
# splits them ($7-$10 the partial hours, $11 the pair's id). $1: name id, $2: key, $4:
# the values (jsonb texts; `value` is the 1-based index there).
STATS_BREAKDOWN_BUCKETS_ROLLUP = """
SELECT array_position($4::jsonb[], v) AS value, bucket, sum(n)::bigint AS events
  FROM (SELECT b.value AS v, h.hour_ms - h.hour_ms % $3 AS bucket, h.events AS n
          FROM breakdown_event_hours h JOIN breakdown_values b ON b.id = h.value_id
         WHERE h.key_id = $11 AND h.hour_ms >= $5 AND h.hour_ms < $6
        UNION ALL
        SELECT breakdown_value(data, $2::text), ts - ts % $3, 1
          FROM events
         WHERE type = 'EVENT' AND name_id = $1 AND (ts >= $7 AND ts < $8 OR ts >= $9 AND ts < $10)
        UNION ALL
        SELECT breakdown_value(data, $2::text), ts - ts % $3, 1
          FROM events
         WHERE position > $12 AND type = 'EVENT' AND name_id = $1 AND ts >= $5 AND ts < $6) AS x
 WHERE v = ANY($4::jsonb[])
 GROUP BY 1, 2
"""

# Per bucket of $5 ms: the EVENTs of name $1 in [$2, $3) whose key $4 has one of the
# values $6 (jsonb texts; `value` is its 1-based index there), for ?bucket=.
STATS_BREAKDOWN_BUCKETS = f"""
SELECT array_position($6::jsonb[], v) AS value, ts - ts % $5 AS bucket, count(*) AS events
  FROM ({_BREAKDOWN_EVENTS}) AS ev
 WHERE v = ANY($6::jsonb[])
 GROUP BY 1, 2
"""


# --- stored session trees (schema/008_session_trees.sql, app/reads/tree_store.py) --
# One builder at a time across every process and the retention run's tree prune
# (a transaction lock: a killed run's is released with its transaction).
TREE_STORE_TRY_LOCK = "SELECT pg_try_advisory_xact_lock(727401, 4)"
TREE_STORE_LOCK = "SELECT pg_advisory_xact_lock(727401, 4)"
# The sessions of the next $1 positions (or fewer) past the watermark are marked
# changed now, and the watermark moves to the last of them. Writers are serialised
# (schema/001), so an entry that commits later has a position above every committed
# one: none is skipped. One pass groups the slice by session, so only one row per
# session is kept and upserted (3x cheaper than keeping the slice). By the first $1 rows, not a range: positions jump by a
# piece's width at each retention roll. Returns the new watermark and the positions
# read (no row: nothing new).
TREE_STORE_MARK = """
WITH slice AS (
    SELECT r.session_id, max(r.position) AS top, count(*) AS positions
      FROM (SELECT e.position, e.session_id
              FROM events e
             WHERE e.position > (SELECT through FROM session_trees_state)
             ORDER BY e.position
             LIMIT $1) AS r
     GROUP BY r.session_id
), marked AS (
    INSERT INTO session_trees_pending AS p (session_id, changed_at)
    SELECT session_id, now() FROM slice
    ON CONFLICT (session_id) DO UPDATE SET changed_at = EXCLUDED.changed_at
)
UPDATE session_trees_state SET through = (SELECT max(top) FROM slice)
 WHERE EXISTS (SELECT 1 FROM slice)
RETURNING through, (SELECT sum(positions) FROM slice)::bigint AS positions
"""
# Up to $3 sessions unchanged for $1 seconds leave the pending set, and those of
# $4 to $2 - 1 EVENTs that lost nothing to retention get their tree (re)built from
# events in this statement's snapshot, with the version of that snapshot; the
# others are not worth storing (small: cheap to read cold; large: streamed), and a
# tree stored before the session outgrew that is deleted.
# Returns how many sessions left the pending set.
TREE_STORE_BUILD = f"""
WITH due AS (
    DELETE FROM session_trees_pending
     WHERE session_id IN (SELECT session_id FROM session_trees_pending
                           WHERE changed_at < now() - make_interval(secs => $1)
                           LIMIT $3)
    RETURNING session_id
), built AS (
    INSERT INTO session_trees AS t (session_id, start_ms, end_ms, event_count, children, built_at)
    SELECT s.id, s.start_ms, s.end_ms, s.event_count, {ENCODED_CHILDREN}, now()
      FROM sessions s
      JOIN due ON due.session_id = s.id
     WHERE s.event_count >= $4 AND s.event_count < $2
       AND NOT {_LOST_TO_RETENTION}
    ON CONFLICT (session_id) DO UPDATE
       SET start_ms = EXCLUDED.start_ms, end_ms = EXCLUDED.end_ms, event_count = EXCLUDED.event_count,
           children = EXCLUDED.children, built_at = EXCLUDED.built_at
    RETURNING 1
), outgrown AS (
    DELETE FROM session_trees t
     USING due, sessions s
     WHERE t.session_id = due.session_id AND s.id = due.session_id AND (s.event_count >= $2 OR s.event_count < $4)
)
SELECT (SELECT count(*) FROM due), (SELECT count(*) FROM built)
"""
# Trees of sessions that lost entries to retention: they must not outlive them.
TREE_STORE_PRUNE = """
DELETE FROM session_trees t
 USING sessions s, retention_state r
 WHERE s.id = t.session_id AND s.first_seen < r.retained_from
"""

# --- retention (schema/007_retention.sql, app/store/retention.py) -----------------
# One retention run at a time across every process: a session lock on one pool
# connection, released at the end of the run (or with the connection, if killed).
RETENTION_TRY_LOCK = "SELECT pg_try_advisory_lock(727401, 3)"
RETENTION_UNLOCK = "SELECT pg_advisory_unlock(727401, 3)"
RETENTION_IN_USE_AGE = """
SELECT extract(epoch FROM clock_timestamp() - opened_at)
  FROM retention_pieces
 WHERE closed_at IS NULL AND opened_at < 'infinity'
"""
RETENTION_ROLL = "SELECT set_config('lock_timeout', '5s', true), retention_roll()"
RETENTION_SPARES = "SELECT count(*) FROM retention_pieces WHERE opened_at = 'infinity'"
RETENTION_ADD_SPARE = "SELECT retention_add_piece((SELECT max(hi) FROM retention_pieces))"
RETENTION_MARK = "SELECT retention_mark FROM retention_mark($1)"
# A detach left pending first: while one is pending, no other piece can be detached.
RETENTION_MARKED = """
SELECT name
  FROM retention_pieces p
 WHERE state = 'removing'
 ORDER BY (SELECT i.inhdetachpending FROM pg_inherits i WHERE i.inhrelid = to_regclass(p.name)) DESC NULLS LAST, lo
"""
# NULL: not attached (any more); false: attached; true: a detach a killed run left pending.
RETENTION_DETACH_PENDING = "SELECT i.inhdetachpending FROM pg_inherits i WHERE i.inhrelid = to_regclass($1)"
RETENTION_PIECE_EXISTS = "SELECT to_regclass($1) IS NOT NULL"
RETENTION_DETACH = "ALTER TABLE events DETACH PARTITION {piece} CONCURRENTLY"
RETENTION_FINALIZE = "ALTER TABLE events DETACH PARTITION {piece} FINALIZE"
RETENTION_PIECE_ROWS = "SELECT count(*), pg_total_relation_size('{piece}') FROM {piece}"
RETENTION_DROP = "DROP TABLE IF EXISTS {piece}"
RETENTION_DONE = """
WITH gone AS (DELETE FROM retention_pieces WHERE name = $1)
UPDATE retention_state SET last_removal_at = clock_timestamp(), last_removal_rows = $2, last_removal_ms = $3
"""
RETENTION_STATE = """
SELECT removed_through,
       (extract(epoch FROM retained_from) * 1000)::bigint AS retained_from_ms,
       (extract(epoch FROM last_removal_at) * 1000)::bigint AS last_removal_ms,
       last_removal_rows,
       last_removal_ms AS last_removal_duration_ms
  FROM retention_state
"""
# The store time (ms) from which every entry is retained; NULL: nothing removed yet.
RETAINED_FROM = "SELECT (extract(epoch FROM retained_from) * 1000)::bigint FROM retention_state"
# A session that lost entries: first seen before retained_from.
SESSION_RETAINED_FROM = """
SELECT (extract(epoch FROM r.retained_from) * 1000)::bigint
  FROM retention_state r, sessions s
 WHERE s.id = $1 AND s.first_seen < r.retained_from
"""
STREAM_REMOVED_THROUGH = "SELECT removed_through FROM retention_state"
# Name presences and breakdown presences (schema/010) of the hours before
# retained_from's hour, a slice of each at a time; the larger count of the two.
RETENTION_PRUNE_PRESENCES = """
WITH names AS (
    DELETE FROM stats_name_session_hours
     WHERE ctid = ANY(ARRAY(SELECT ctid FROM stats_name_session_hours WHERE hour_ms < $1 LIMIT $2))
    RETURNING 1
), pairs AS (
    DELETE FROM breakdown_presences
     WHERE ctid = ANY(ARRAY(SELECT ctid FROM breakdown_presences WHERE hour_ms < $1 LIMIT $2))
    RETURNING 1
)
SELECT greatest((SELECT count(*) FROM names), (SELECT count(*) FROM pairs))
"""
