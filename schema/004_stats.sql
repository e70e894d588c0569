-- eventservice schema, version 004: what GET /stats/... reads.
--
-- Idempotent like 001: applied by the service at start-up and usable unchanged
-- as a docker-entrypoint-initdb.d script.
--
-- Additive figures come from per-minute rollups that the events statement trigger
-- keeps up to date in the same transaction as the events themselves, so they are
-- exact and include plain-SQL writers. Distinct counts and percentiles scan the
-- base tables through the two indexes below. A range that does not start or end
-- on a whole minute reads its partial edge minutes from the base tables.

-- EVENTs per UTC minute (ts - ts % 60000) and name, by the events' own timestamps.
-- Minute buckets and the whole minutes at a range's ends read this.
CREATE TABLE IF NOT EXISTS stats_event_minutes (
    minute_ms bigint  NOT NULL,
    name_id   integer NOT NULL,
    events    bigint  NOT NULL,
    PRIMARY KEY (minute_ms, name_id)
);

-- The same per UTC hour: a 30-day range reads 720 rows per name instead of 43,200.
CREATE TABLE IF NOT EXISTS stats_event_hours (
    hour_ms bigint  NOT NULL,
    name_id integer NOT NULL,
    events  bigint  NOT NULL,
    PRIMARY KEY (hour_ms, name_id)
);

-- What the trigger writes: plain appends, no index, no row updated, because
-- upserting the same hot rollup rows from every batch raised PostgreSQL's CPU
-- per event by half (bench ingest). stats_fold() moves them into the
-- rollups above; readers add what is still here, so every snapshot is exact.
-- The trigger folds whenever a statement's positions cross a multiple of 10,000,
-- so these tables hold at most about 10,000 rows.
CREATE TABLE IF NOT EXISTS stats_event_deltas (
    minute_ms bigint  NOT NULL,
    name_id   integer NOT NULL,
    events    bigint  NOT NULL
);
CREATE TABLE IF NOT EXISTS stats_session_deltas (
    minute_ms bigint NOT NULL,
    started   bigint NOT NULL
);

-- Sessions per UTC minute of their start (the earliest SESSION_START). A session
-- moves to an earlier minute when a smaller SESSION_START arrives later.
CREATE TABLE IF NOT EXISTS stats_session_minutes (
    minute_ms bigint PRIMARY KEY,
    started   bigint NOT NULL
);

-- Sessions started in a range (summary, funnel, edge minutes). Only start_ms is
-- indexed, so the trigger's updates of end_ms/event_count stay HOT.
CREATE INDEX IF NOT EXISTS sessions_start ON sessions (start_ms) WHERE start_ms IS NOT NULL;

-- Events in a range (distinct sessions per name, the partial minutes at a range's
-- ends): a BRIN index, a few bytes per 32 pages. Events arrive roughly in time
-- order, so each block range spans little time. A B-tree on (ts) covering
-- name_id and session_id would make those reads index-only, but cost every
-- insert an index entry (2-4 µs of PostgreSQL CPU per event, measured).
DROP INDEX IF EXISTS events_event_ts;
CREATE INDEX IF NOT EXISTS events_ts_brin ON events USING brin (ts) WITH (pages_per_range = 32);

-- Moves the deltas into the rollups in one transaction: readers see them either
-- here or there, never both, never neither. Called by the trigger (writers are
-- serialised, so no delta is appended meanwhile) and safe to call from psql.
CREATE OR REPLACE FUNCTION stats_fold() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    WITH gone AS (
        DELETE FROM stats_event_deltas RETURNING minute_ms, name_id, events
    ), per_minute AS (
        SELECT minute_ms, name_id, sum(events) AS events FROM gone GROUP BY 1, 2
    ), minutes AS (
        INSERT INTO stats_event_minutes AS r (minute_ms, name_id, events)
        SELECT minute_ms, name_id, events FROM per_minute
        ON CONFLICT (minute_ms, name_id) DO UPDATE SET events = r.events + EXCLUDED.events
    )
    INSERT INTO stats_event_hours AS h (hour_ms, name_id, events)
    SELECT minute_ms - minute_ms % 3600000, name_id, sum(events) FROM per_minute GROUP BY 1, 2
    ON CONFLICT (hour_ms, name_id) DO UPDATE SET events = h.events + EXCLUDED.events;

    WITH gone AS (
        DELETE FROM stats_session_deltas RETURNING minute_ms, started
    )
    INSERT INTO stats_session_minutes AS m (minute_ms, started)
    SELECT minute_ms, sum(started) FROM gone GROUP BY 1
    ON CONFLICT (minute_ms) DO UPDATE SET started = m.started + EXCLUDED.started;
END $$;

-- The statement trigger of 001, plus the rollups' deltas. Writers are serialised
-- by the advisory lock of events_serialize_writers(), so they always see the
-- previous writer's commit and their folds cannot overlap.
--
-- A session's start changes only when this statement brings an earlier
-- SESSION_START (or its first): the counts then lose one at the old minute (if
-- any) and gain one at the new. The old start is read before 001's upsert below
-- changes it, one primary-key probe per session that has a SESSION_START here.
CREATE OR REPLACE FUNCTION events_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    top bigint;
    bottom bigint;
BEGIN
    -- The event deltas, and the start moves read before 001's upsert changes them.
    WITH event_deltas AS (
        INSERT INTO stats_event_deltas (minute_ms, name_id, events)
        SELECT ts - ts % 60000, name_id, count(*)
          FROM new_rows
         WHERE type = 'EVENT'
         GROUP BY 1, 2
    ), starts AS (
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

    -- 001's statement, unchanged.
    INSERT INTO sessions AS s (id, start_ms, end_ms, event_count)
    SELECT session_id,
           min(ts) FILTER (WHERE type = 'SESSION_START'),
           max(ts) FILTER (WHERE type = 'SESSION_END'),
           count(*) FILTER (WHERE type = 'EVENT')
      FROM new_rows
     GROUP BY session_id
    ON CONFLICT (id) DO UPDATE
       SET start_ms = LEAST(s.start_ms, EXCLUDED.start_ms),
           end_ms = GREATEST(s.end_ms, EXCLUDED.end_ms),
           event_count = s.event_count + EXCLUDED.event_count;

    SELECT max(position), min(position) INTO top, bottom FROM new_rows;
    IF top IS NOT NULL THEN
        IF top / 10000 > (bottom - 1) / 10000 THEN
            PERFORM stats_fold();
        END IF;
        PERFORM pg_notify('eventservice_events', top::text);
    END IF;
    RETURN NULL;
END $$;

-- Backfill: recompute the rollups from the base tables, holding the writers' lock
-- so no batch commits between the recount and the new trigger taking over.
-- Recomputing (rather than adding) keeps a second run of this file exact.
DO $$
BEGIN
    PERFORM pg_advisory_xact_lock(727401, 1);
    TRUNCATE stats_event_minutes, stats_event_hours, stats_session_minutes, stats_event_deltas, stats_session_deltas;
    INSERT INTO stats_event_minutes (minute_ms, name_id, events)
    SELECT ts - ts % 60000, name_id, count(*) FROM events WHERE type = 'EVENT' GROUP BY 1, 2;
    INSERT INTO stats_event_hours (hour_ms, name_id, events)
    SELECT minute_ms - minute_ms % 3600000, name_id, sum(events) FROM stats_event_minutes GROUP BY 1, 2;
    INSERT INTO stats_session_minutes (minute_ms, started)
    SELECT start_ms - start_ms % 60000, count(*) FROM sessions WHERE start_ms IS NOT NULL GROUP BY 1;
END $$;

ANALYZE stats_event_minutes;
ANALYZE stats_event_hours;
ANALYZE stats_session_minutes;
