-- eventservice schema, version 005: distinct sessions per name, and where each
-- session's events lie, kept by the events trigger and its fold.
--
-- Idempotent like 001: applied by the service at start-up and usable unchanged
-- as a docker-entrypoint-initdb.d script (after 004, whose trigger function and
-- stats_fold() it replaces).
--
-- GET /stats/names counts, per name, the distinct sessions with an EVENT of that
-- name in a range. Scanning the events for that took 15 s for 30 days of 10 M
-- events (bench stats). A distinct count is not additive over hours, but this is:
-- record when a (session, name) pair is present in an hour, and with each
-- presence the previous hour that pair was present in. The pairs present in the
-- whole hours [A, B) are then exactly the presences in [A, B) whose previous
-- presence lies before A (or does not exist): one per pair, its first hour in
-- the range. stats_name_hours counts those presences per (hour, name, previous
-- hour), a few rows per hour and name, so 30 days read tens of thousands of rows.
--
-- Presences are not touched by every insert: finding out whether a pair is new
-- takes an index probe per pair, and every batch's statement runs while holding
-- the writers' lock, so what it costs is ingest throughput lost (bench ingest).
-- stats_fold() adds the presences of every event up to a watermark, set-based.
-- Readers take what lies beyond the watermark (by primary key) and the partial
-- hours at a range's ends from events itself (see queries.py STATS_NAME_SESSIONS);
-- in one snapshot that is exact.
--
-- For the same reason 004's per-minute counts of EVENTs move behind the same
-- watermark: appending their deltas was most of what 004 added to every insert
-- (the trigger's time per event, 100-event statements: 001-003 5.7 us, with
-- 004+005 7.3 us, without the event deltas 5.8 us). The trigger keeps only the
-- session start moves (they need the start before its own upsert changes it),
-- and the fold counts the events past the watermark into the rollups.
--
-- The fold no longer runs inside a writer's statement every 10,000 positions
-- either: the service calls stats_fold() about once a second from its own
-- connection (app/store/watch.py), beside the writers, not between them. The
-- trigger still folds when a statement crosses a multiple of 1,000,000 positions,
-- unless a fold is running: with no service running, plain-SQL writes keep what
-- readers must add up bounded.

-- First the writers' lock, then the fold's, in the order writers and folds take
-- them: the ALTER TABLE on sessions below waits for nothing a writer holding the
-- writers' lock could wait on in turn (its trigger upserts sessions). Transaction
-- locks: held to the end of the service's one transaction for this file (psql
-- running it as an initdb script releases them at once, with no writer around).
SELECT pg_advisory_xact_lock(727401, 1);
SELECT pg_advisory_xact_lock(727401, 2);

-- Which (session, name) had an EVENT in which UTC hour, for the events up to
-- stats_folded.position (as are 004's stats_event_minutes and stats_event_hours).
CREATE TABLE IF NOT EXISTS stats_name_session_hours (
    session_id uuid    NOT NULL,
    name_id    integer NOT NULL,
    hour_ms    bigint  NOT NULL,
    PRIMARY KEY (session_id, name_id, hour_ms)
);

-- Presences per hour, name and previous hour of the same pair (-1: none).
CREATE TABLE IF NOT EXISTS stats_name_hours (
    hour_ms      bigint  NOT NULL,
    name_id      integer NOT NULL,
    prev_hour_ms bigint  NOT NULL,
    sessions     bigint  NOT NULL,
    PRIMARY KEY (hour_ms, name_id, prev_hour_ms)
);

-- The last position whose events the presences and the EVENT counts include.
CREATE TABLE IF NOT EXISTS stats_folded (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    position  bigint  NOT NULL
);

-- The earliest and latest timestamp of each session's entries, whatever their
-- type. A funnel reads the events of the sessions started in a range; these
-- bound where in time those events lie, so it reads them through the BRIN index
-- on events(ts) instead of every event. Not indexed, so updates stay HOT.
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS first_ts bigint;
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS last_ts bigint;

-- 004's fold of the session deltas, plus the EVENT counts and the presences of
-- the events since the last fold (then the watermark moves to them). It takes its
-- own lock (727401, 2), not the writers' one: folds run one at a time, while
-- writers go on. That stays exact: each statement below runs after the lock and
-- sees every fold before it (hence READ COMMITTED only); a writer that has not
-- committed appends deltas the DELETE does not see and holds positions above
-- every committed one (writers are serialised), so the committed events up to
-- `head` are all there will ever be below it.
--
-- New presences (those the INSERT ... ON CONFLICT DO NOTHING really added) are
-- placed among the pair's older ones: the nearest older hour before (old_prev)
-- and after (old_next) each, and the nearest new hour before it (new_prev). The
-- other parts of one statement see the table without its own inserts, so the
-- probes find older presences only. Then:
-- - each new presence counts once, with previous hour greatest(old_prev, new_prev);
-- - an older presence s that now has new ones just before it (those whose
--   old_next is s; they share one old_prev) changes its previous hour from
--   old_prev to the latest of them: -1 and +1.
--
-- enable_seqscan is off inside: PL/pgSQL caches plans per connection (a generic
-- one once a statement ran five times), and planned on a nearly empty database the
-- probes are sequential scans, quadratic once the tables grow (loading 10 M events
-- did not finish). Every probe here has an index; the sequential scans left are of
-- the delta tables.
--
-- stats_fold_up_to(n) folds at most n events; stats_fold() is what the service and
-- the trigger call.
CREATE OR REPLACE FUNCTION stats_fold_up_to(max_events integer) RETURNS void
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    folded bigint;
    head bigint;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'stats_fold() needs READ COMMITTED: a snapshot older than the previous fold would count its work twice';
    END IF;
    IF max_events < 1 THEN
        RAISE EXCEPTION 'stats_fold_up_to(%): fold at least one event', max_events;
    END IF;
    PERFORM pg_advisory_xact_lock(727401, 2);
    WITH gone AS (
        DELETE FROM stats_session_deltas RETURNING minute_ms, started
    )
    INSERT INTO stats_session_minutes AS m (minute_ms, started)
    SELECT minute_ms, sum(started) FROM gone GROUP BY 1
    ON CONFLICT (minute_ms) DO UPDATE SET started = m.started + EXCLUDED.started;

    SELECT position INTO folded FROM stats_folded;
    -- At most max_events per call, so a fold behind (plain-SQL loads with no service
    -- running) catches up in steps that each finish and commit. Counted in events,
    -- not positions: positions have gaps (rollbacks, the random base).
    head := coalesce((SELECT position FROM events WHERE position > folded ORDER BY position OFFSET max_events - 1 LIMIT 1),
                     (SELECT max(position) FROM events));
    IF head IS NULL OR head <= folded THEN
        RETURN;
    END IF;

    WITH per_minute AS (
        SELECT ts - ts % 60000 AS minute_ms, name_id, count(*) AS events
          FROM events
         WHERE position > folded AND position <= head AND type = 'EVENT'
         GROUP BY 1, 2
    ), minutes AS (
        INSERT INTO stats_event_minutes AS r (minute_ms, name_id, events)
        SELECT minute_ms, name_id, events FROM per_minute
        ON CONFLICT (minute_ms, name_id) DO UPDATE SET events = r.events + EXCLUDED.events
    )
    INSERT INTO stats_event_hours AS h (hour_ms, name_id, events)
    SELECT minute_ms - minute_ms % 3600000, name_id, sum(events) FROM per_minute GROUP BY 1, 2
    ON CONFLICT (hour_ms, name_id) DO UPDATE SET events = h.events + EXCLUDED.events;

    WITH added AS (
        INSERT INTO stats_name_session_hours AS p (session_id, name_id, hour_ms)
        SELECT DISTINCT session_id, name_id, ts - ts % 3600000
          FROM events
         WHERE position > folded AND position <= head AND type = 'EVENT'
        ON CONFLICT DO NOTHING
        RETURNING p.session_id, p.name_id, p.hour_ms
    ), placed AS (
        SELECT a.session_id, a.name_id, a.hour_ms,
               (SELECT max(o.hour_ms) FROM stats_name_session_hours o
                 WHERE o.session_id = a.session_id AND o.name_id = a.name_id AND o.hour_ms < a.hour_ms) AS old_prev,
               (SELECT min(o.hour_ms) FROM stats_name_session_hours o
                 WHERE o.session_id = a.session_id AND o.name_id = a.name_id AND o.hour_ms > a.hour_ms) AS old_next,
               lag(a.hour_ms) OVER (PARTITION BY a.session_id, a.name_id ORDER BY a.hour_ms) AS new_prev
          FROM added a
    ), moves AS (
        SELECT hour_ms, name_id, coalesce(greatest(old_prev, new_prev), -1) AS prev_hour_ms, 1 AS sessions
          FROM placed
        UNION ALL
        SELECT old_next, name_id, coalesce(old_prev, -1), -1
          FROM placed
         WHERE old_next IS NOT NULL
         GROUP BY session_id, name_id, old_next, old_prev
        UNION ALL
        SELECT old_next, name_id, max(hour_ms), 1
          FROM placed
         WHERE old_next IS NOT NULL
         GROUP BY session_id, name_id, old_next
    )
    INSERT INTO stats_name_hours AS n (hour_ms, name_id, prev_hour_ms, sessions)
    SELECT hour_ms, name_id, prev_hour_ms, sum(sessions)
      FROM moves
     GROUP BY 1, 2, 3
    HAVING sum(sessions) <> 0
    ON CONFLICT (hour_ms, name_id, prev_hour_ms) DO UPDATE SET sessions = n.sessions + EXCLUDED.sessions;
    UPDATE stats_folded SET position = head;
END $$;

CREATE OR REPLACE FUNCTION stats_fold() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM stats_fold_up_to(1000000);
END $$;

-- The trigger's fold: none when another fold holds the lock (the writer must not
-- wait for it) or when the writer's transaction is not READ COMMITTED.
CREATE OR REPLACE FUNCTION stats_try_fold() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('transaction_isolation') = 'read committed' AND pg_try_advisory_xact_lock(727401, 2) THEN
        PERFORM stats_fold();
    END IF;
END $$;

-- 004's statement trigger without the EVENT deltas, plus the time span of each
-- session's entries, and folding only every 1,000,000 positions (see above).
CREATE OR REPLACE FUNCTION events_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    top bigint;
    bottom bigint;
BEGIN
    -- 004: the start moves, read before the upsert below changes them.
    WITH starts AS (
        SELECT session_id, min(ts) AS new_start
          FROM new_rows
         WHERE type = 'SESSION_START'
         GROUP BY session_id
    ), moved AS (
        SELECT new_start, (SELECT s.start_ms FROM sessions s WHERE s.id = starts.session_id) AS old_start
          FROM starts
    )
    INSERT INTO stats_session_deltas (minute_ms, started)
    SELECT minute_ms, sum(delta)
      FROM (SELECT new_start - new_start % 60000, 1 FROM moved WHERE old_start IS NULL OR new_start < old_start
            UNION ALL
            SELECT old_start - old_start % 60000, -1 FROM moved WHERE new_start < old_start) AS d (minute_ms, delta)
     GROUP BY minute_ms
    HAVING sum(delta) <> 0;

    -- 001's statement, plus 005's time span of each session's entries.
    INSERT INTO sessions AS s (id, start_ms, end_ms, event_count, first_ts, last_ts)
    SELECT session_id,
           min(ts) FILTER (WHERE type = 'SESSION_START'),
           max(ts) FILTER (WHERE type = 'SESSION_END'),
           count(*) FILTER (WHERE type = 'EVENT'),
           min(ts),
           max(ts)
      FROM new_rows
     GROUP BY session_id
    ON CONFLICT (id) DO UPDATE
       SET start_ms = LEAST(s.start_ms, EXCLUDED.start_ms),
           end_ms = GREATEST(s.end_ms, EXCLUDED.end_ms),
           event_count = s.event_count + EXCLUDED.event_count,
           first_ts = LEAST(s.first_ts, EXCLUDED.first_ts),
           last_ts = GREATEST(s.last_ts, EXCLUDED.last_ts);

    SELECT max(position), min(position) INTO top, bottom FROM new_rows;
    IF top IS NOT NULL THEN
        IF top / 1000000 > (bottom - 1) / 1000000 THEN
            PERFORM stats_try_fold();
        END IF;
        PERFORM pg_notify('eventservice_events', top::text);
    END IF;
    RETURN NULL;
END $$;

-- Backfill from the base tables under the writers' lock and the fold's (a fold
-- meanwhile would add again what this counts), recomputing (not adding) so a
-- second run of this file is exact too.
DO $$
BEGIN
    PERFORM pg_advisory_xact_lock(727401, 1);
    PERFORM pg_advisory_xact_lock(727401, 2);
    -- 004's counts of EVENTs, recounted here so that they count exactly the events
    -- up to the watermark set below (004 left deltas beside them, which no trigger
    -- appends any more).
    TRUNCATE stats_event_minutes, stats_event_hours, stats_event_deltas;
    INSERT INTO stats_event_minutes (minute_ms, name_id, events)
    SELECT ts - ts % 60000, name_id, count(*) FROM events WHERE type = 'EVENT' GROUP BY 1, 2;
    INSERT INTO stats_event_hours (hour_ms, name_id, events)
    SELECT minute_ms - minute_ms % 3600000, name_id, sum(events) FROM stats_event_minutes GROUP BY 1, 2;
    TRUNCATE stats_name_session_hours, stats_name_hours;
    INSERT INTO stats_name_session_hours (session_id, name_id, hour_ms)
    SELECT DISTINCT session_id, name_id, ts - ts % 3600000 FROM events WHERE type = 'EVENT';
    INSERT INTO stats_name_hours (hour_ms, name_id, prev_hour_ms, sessions)
    SELECT hour_ms, name_id, prev_hour_ms, count(*)
      FROM (SELECT hour_ms, name_id,
                   coalesce(lag(hour_ms) OVER (PARTITION BY session_id, name_id ORDER BY hour_ms), -1) AS prev_hour_ms
              FROM stats_name_session_hours) AS p
     GROUP BY 1, 2, 3;
    INSERT INTO stats_folded (position) VALUES (coalesce((SELECT max(position) FROM events), 0))
    ON CONFLICT (singleton) DO UPDATE SET position = EXCLUDED.position;
    UPDATE sessions s
       SET first_ts = e.first_ts, last_ts = e.last_ts
      FROM (SELECT session_id, min(ts) AS first_ts, max(ts) AS last_ts FROM events GROUP BY session_id) AS e
     WHERE s.id = e.session_id
       AND (s.first_ts IS DISTINCT FROM e.first_ts OR s.last_ts IS DISTINCT FROM e.last_ts);
END $$;

ANALYZE stats_event_minutes;
ANALYZE stats_event_hours;
ANALYZE stats_name_session_hours;
ANALYZE stats_name_hours;
