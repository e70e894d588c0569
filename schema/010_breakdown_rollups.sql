-- eventservice schema, version 010: rollups for the breakdowns people ask for.
--
-- Idempotent like 001, applied by the service at start-up, usable as a
-- docker-entrypoint-initdb.d script after 009.
--
-- GET /stats/breakdown groups one name's EVENTs by the value of one data key, with
-- distinct sessions per value. Read from events, 30 days of 10 M events took 5-14 s
-- (bench stats): 2.5 M rows read and parsed, then grouped into 2.2 M (value,
-- session) pairs. Keeping narrow copies of every event for every key cost a quarter
-- of ingest (docs/performance.md). Keys are many, but the (name, key) pairs anyone
-- breaks down by are few: a pair gets a rollup when it is first asked for
-- (breakdown_keys, at most BREAKDOWN_ROLLUPS of them), and only those pairs cost
-- anything to keep.
--
-- Per pair, the same scheme as 005's names, with a value beside the name: the
-- (session, value) presences per hour, and per (hour, value, previous hour of the
-- same pair) how many presences there are, so that the distinct sessions of one
-- value over whole hours [A, B) are the presences in [A, B) whose previous one lies
-- before A. The EVENTs per (hour, value) are added up as they are. The values have
-- ids (breakdown_values; 0 stands for "missing": no key or no object), so the
-- presences stay small, and the distinct sessions of the values past a limit (the
-- `other` group, which no per-value count can give) read only those values'
-- presences.
--
-- Each pair has its own watermark (`through`, a stream position). The service's
-- fold (app/store/watch.py) brings every pair towards stats_folded.position in
-- slices, so a pair asked for on a large database catches up over a few folds
-- while the others keep up. A reader takes the whole hours up to `through` from
-- here and the rest (the partial hours at the range's ends and the events past
-- `through`) from events itself, in one snapshot: exact whatever wrote the events
-- and in whatever order they arrived (queries.py STATS_BREAKDOWN_ROLLUP).

-- The order writers and folds take them (005): stats_fold() and stats_try_fold()
-- are replaced below.
SELECT pg_advisory_xact_lock(727401, 1);
SELECT pg_advisory_xact_lock(727401, 2);

CREATE TABLE IF NOT EXISTS breakdown_keys (
    id         serial      PRIMARY KEY,
    name_id    integer     NOT NULL,
    key        text        NOT NULL,
    -- The last position whose EVENTs this pair's rollup includes.
    through    bigint      NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Set when the pair passed BREAKDOWN_MAX_VALUES values (see the fold): it is
    -- folded no more, read from events alone, and keeps its place (asked again, it
    -- is not made again).
    given_up_at timestamptz,
    UNIQUE (name_id, key)
);

-- A data key's value as jsonb, as every breakdown and data filter reads it; NULL (the
-- key counts as missing) when the data holds a \u0000 escape. json accepts one and
-- a plain-SQL writer can store it (ingest refuses it), but PostgreSQL cannot read
-- such json as jsonb, nor take a key of it: one such row would fail every read of
-- its name, and stop its pairs' fold for good. Inlined (a plain SQL expression):
-- nothing but a search of the text for most rows.
CREATE OR REPLACE FUNCTION breakdown_value(data json, key text) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN strpos(data::text, '\u0000') = 0 OR data::text !~ '(^|[^\\])(\\\\)*\\u0000'
                THEN (data -> key)::jsonb END
$$;

-- The values one pair has seen. Looked up by a hash of the value, not the value:
-- a btree entry cannot hold a long string, and jsonb_hash agrees with jsonb's
-- equality (3 and 3.0 are one value, as in the breakdown's grouping).
CREATE TABLE IF NOT EXISTS breakdown_values (
    id     serial  PRIMARY KEY,
    key_id integer NOT NULL,
    value  jsonb   NOT NULL
);
CREATE INDEX IF NOT EXISTS breakdown_values_lookup ON breakdown_values (key_id, jsonb_hash(value));

-- Which session had an EVENT with which value (0: missing) in which UTC hour. By
-- value first: the `other` group's distinct sessions read only the presences of
-- the values past the limit (a few percent of them, typically), and the fold's
-- and the reader's probes give key, value and session alike.
CREATE TABLE IF NOT EXISTS breakdown_presences (
    key_id     integer NOT NULL,
    value_id   integer NOT NULL,
    session_id uuid    NOT NULL,
    hour_ms    bigint  NOT NULL,
    PRIMARY KEY (key_id, value_id, session_id, hour_ms)
);
-- Retention deletes the presences of old hours (as 007 does for the names').
CREATE INDEX IF NOT EXISTS breakdown_presences_hour ON breakdown_presences USING brin (hour_ms);

CREATE TABLE IF NOT EXISTS breakdown_event_hours (
    key_id   integer NOT NULL,
    hour_ms  bigint  NOT NULL,
    value_id integer NOT NULL,
    events   bigint  NOT NULL,
    PRIMARY KEY (key_id, hour_ms, value_id)
);

-- Presences per hour, value and previous hour of the same (session, value) (-1: none).
CREATE TABLE IF NOT EXISTS breakdown_session_hours (
    key_id       integer NOT NULL,
    hour_ms      bigint  NOT NULL,
    value_id     integer NOT NULL,
    prev_hour_ms bigint  NOT NULL,
    sessions     bigint  NOT NULL,
    PRIMARY KEY (key_id, hour_ms, value_id, prev_hour_ms)
);

-- An operator frees a pair's place with `DELETE FROM breakdown_keys WHERE ...`; its
-- rows go with it (all of them: a pair's presences are as many as its (session,
-- value, hour) triples, so this is a command to run off-peak, not per request). The
-- fold's lock first, before any row of breakdown_keys is: a fold running meanwhile
-- would otherwise add rows of the pair after they were deleted.
CREATE OR REPLACE FUNCTION breakdown_keys_lock_fold() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(727401, 2);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS breakdown_keys_lock_fold ON breakdown_keys;
CREATE TRIGGER breakdown_keys_lock_fold BEFORE DELETE ON breakdown_keys
    FOR EACH STATEMENT EXECUTE FUNCTION breakdown_keys_lock_fold();

-- Every row the pairs `pairs` have, but their breakdown_keys rows: for a DELETE of
-- those (the trigger below) and for the pairs the fold gives up.
CREATE OR REPLACE FUNCTION breakdown_forget(pairs integer[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM breakdown_values WHERE key_id = ANY(pairs);
    DELETE FROM breakdown_presences WHERE key_id = ANY(pairs);
    DELETE FROM breakdown_event_hours WHERE key_id = ANY(pairs);
    DELETE FROM breakdown_session_hours WHERE key_id = ANY(pairs);
END $$;

CREATE OR REPLACE FUNCTION breakdown_keys_forget() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM breakdown_forget(ARRAY(SELECT id FROM gone));
    RETURN NULL;
END $$;
-- TRUNCATE would skip that trigger and leave a pair's rows behind, for whichever
-- pair gets its id next: refused, with the way that works.
CREATE OR REPLACE FUNCTION breakdown_keys_refuse_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'breakdown_keys cannot be truncated: DELETE FROM breakdown_keys removes the pairs and their rows';
END $$;
DROP TRIGGER IF EXISTS breakdown_keys_no_truncate ON breakdown_keys;
CREATE TRIGGER breakdown_keys_no_truncate BEFORE TRUNCATE ON breakdown_keys
    FOR EACH STATEMENT EXECUTE FUNCTION breakdown_keys_refuse_truncate();
DROP TRIGGER IF EXISTS breakdown_keys_forget ON breakdown_keys;
CREATE TRIGGER breakdown_keys_forget AFTER DELETE ON breakdown_keys
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION breakdown_keys_forget();

-- A pair gets a rollup when it is asked for, while fewer than at_most pairs have
-- one (BREAKDOWN_ROLLUPS). False: the name does not exist or the pairs are all
-- taken; the breakdown is then read from events alone. Counted under a lock of its
-- own, so two processes asking at once cannot pass the limit together (under READ
-- COMMITTED: the count must see what was made before the lock was granted). Pairs
-- given up (see the fold) keep their row but not a place.
CREATE OR REPLACE FUNCTION breakdown_register(wanted_name text, wanted_key text, at_most integer) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    wanted_id integer;
    kept boolean;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'breakdown_register() needs READ COMMITTED: its count must see the pairs made before its lock';
    END IF;
    SELECT id INTO wanted_id FROM event_names WHERE name = wanted_name;
    IF wanted_id IS NULL THEN
        RETURN false;
    END IF;
    SELECT given_up_at IS NULL INTO kept FROM breakdown_keys WHERE name_id = wanted_id AND key = wanted_key;
    IF FOUND THEN
        RETURN kept;
    END IF;
    PERFORM pg_advisory_xact_lock(727401, 5);
    IF (SELECT count(*) FROM breakdown_keys WHERE given_up_at IS NULL) >= at_most THEN
        RETURN false;
    END IF;
    INSERT INTO breakdown_keys (name_id, key) VALUES (wanted_id, wanted_key) ON CONFLICT DO NOTHING;
    RETURN true;
END $$;

-- Brings every pair up to stats_folded.position, at most max_events positions at a
-- time (counted in events: positions have gaps); true when every pair is there.
-- Pairs at the same watermark (all of them, once caught up) fold together: one
-- read of the slice for all of them, so that a pair costs the EVENTs of its name,
-- not another pass over every event. Under the fold's lock, so pairs fold one at a
-- time with the rest of the fold; READ COMMITTED, so each statement sees every fold
-- before it (as 005's). The slice is grouped by (pair, session, hour, value) first,
-- and each distinct value looked up once (new ones get their id in the same
-- statement). The presences and their previous hours as in 005's stats_fold_up_to,
-- per pair and value.
CREATE OR REPLACE FUNCTION breakdown_fold_up_to(max_events integer) RETURNS boolean
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    folded bigint;
    done bigint;
    upto bigint;
    pairs integer[];
    given_up integer[];
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'breakdown_fold_up_to() needs READ COMMITTED: a snapshot older than the previous fold would count its work twice';
    END IF;
    IF max_events < 1 THEN
        RAISE EXCEPTION 'breakdown_fold_up_to(%): fold at least one event', max_events;
    END IF;
    PERFORM pg_advisory_xact_lock(727401, 2);
    SELECT position INTO folded FROM stats_folded;
    FOR done IN SELECT DISTINCT through FROM breakdown_keys WHERE through < folded AND given_up_at IS NULL ORDER BY through LOOP
        -- The pairs of this slice, named once: a pair made meanwhile (through 0) must
        -- not be moved past events it was not given.
        pairs := ARRAY(SELECT id FROM breakdown_keys WHERE through = done AND given_up_at IS NULL);
        upto := least(folded, coalesce((SELECT position FROM events WHERE position > done
                                         ORDER BY position OFFSET max_events - 1 LIMIT 1), folded));

        WITH slice AS MATERIALIZED (
            SELECT k.id AS key_id, e.session_id, e.ts - e.ts % 3600000 AS hour_ms, breakdown_value(e.data, k.key) AS v,
                   count(*) AS events
              FROM events e
              JOIN breakdown_keys k ON k.name_id = e.name_id AND k.id = ANY(pairs)
             WHERE e.position > done AND e.position <= upto AND e.type = 'EVENT'
             GROUP BY 1, 2, 3, 4
        ), known AS MATERIALIZED (
            SELECT key_id, v, (SELECT b.id FROM breakdown_values b
                                WHERE b.key_id = d.key_id AND jsonb_hash(b.value) = jsonb_hash(d.v) AND b.value = d.v) AS id
              FROM (SELECT DISTINCT key_id, v FROM slice WHERE v IS NOT NULL) AS d
        ), fresh AS (
            INSERT INTO breakdown_values (key_id, value)
            SELECT key_id, v FROM known WHERE id IS NULL
            RETURNING key_id, id, value
        ), ids AS (
            SELECT key_id, v, id FROM known WHERE id IS NOT NULL
            UNION ALL
            SELECT key_id, value, id FROM fresh
        ), labelled AS MATERIALIZED (
            SELECT s.key_id, s.session_id, s.hour_ms, coalesce(i.id, 0) AS value_id, s.events
              FROM slice s LEFT JOIN ids i ON i.key_id = s.key_id AND i.v = s.v
        ), counted AS (
            INSERT INTO breakdown_event_hours AS h (key_id, hour_ms, value_id, events)
            SELECT key_id, hour_ms, value_id, sum(events) FROM labelled GROUP BY 1, 2, 3
            ON CONFLICT (key_id, hour_ms, value_id) DO UPDATE SET events = h.events + EXCLUDED.events
        ), added AS (
            INSERT INTO breakdown_presences AS p (key_id, value_id, session_id, hour_ms)
            SELECT DISTINCT key_id, value_id, session_id, hour_ms FROM labelled
            ON CONFLICT DO NOTHING
            RETURNING p.key_id, p.value_id, p.session_id, p.hour_ms
        ), placed AS (
            SELECT a.key_id, a.value_id, a.session_id, a.hour_ms,
                   (SELECT max(o.hour_ms) FROM breakdown_presences o
                     WHERE o.key_id = a.key_id AND o.value_id = a.value_id AND o.session_id = a.session_id
                       AND o.hour_ms < a.hour_ms) AS old_prev,
                   (SELECT min(o.hour_ms) FROM breakdown_presences o
                     WHERE o.key_id = a.key_id AND o.value_id = a.value_id AND o.session_id = a.session_id
                       AND o.hour_ms > a.hour_ms) AS old_next,
                   lag(a.hour_ms) OVER (PARTITION BY a.key_id, a.value_id, a.session_id ORDER BY a.hour_ms) AS new_prev
              FROM added a
        ), moves AS (
            SELECT key_id, hour_ms, value_id, coalesce(greatest(old_prev, new_prev), -1) AS prev_hour_ms, 1 AS sessions
              FROM placed
            UNION ALL
            SELECT key_id, old_next, value_id, coalesce(old_prev, -1), -1
              FROM placed
             WHERE old_next IS NOT NULL
             GROUP BY key_id, value_id, session_id, old_next, old_prev
            UNION ALL
            SELECT key_id, old_next, value_id, max(hour_ms), 1
              FROM placed
             WHERE old_next IS NOT NULL
             GROUP BY key_id, value_id, session_id, old_next
        )
        INSERT INTO breakdown_session_hours AS n (key_id, hour_ms, value_id, prev_hour_ms, sessions)
        SELECT key_id, hour_ms, value_id, prev_hour_ms, sum(sessions)
          FROM moves
         GROUP BY 1, 2, 3, 4
        HAVING sum(sessions) <> 0
        ON CONFLICT (key_id, hour_ms, value_id, prev_hour_ms) DO UPDATE SET sessions = n.sessions + EXCLUDED.sessions;

        UPDATE breakdown_keys SET through = upto WHERE id = ANY(pairs);

        -- A key with more values than a breakdown can show (an id, a timestamp, a
        -- free text) costs a row per event, and a read as long as from events: past
        -- 10,000 values the pair is given up and its rows go (a slice adds at most
        -- max_events values, so they are few).
        WITH gone AS (
            UPDATE breakdown_keys k SET given_up_at = now()
             WHERE k.id = ANY(pairs)
               AND (SELECT count(*) FROM (SELECT 1 FROM breakdown_values b WHERE b.key_id = k.id LIMIT 10001) AS c) > 10000
            RETURNING k.id
        )
        SELECT ARRAY(SELECT id FROM gone) INTO given_up;
        IF cardinality(given_up) > 0 THEN
            PERFORM breakdown_forget(given_up);
        END IF;
    END LOOP;
    RETURN NOT EXISTS (SELECT 1 FROM breakdown_keys WHERE through < folded AND given_up_at IS NULL);
END $$;

-- 005's stats_fold(), plus the breakdown pairs' (after the fold has moved the
-- watermark they follow): what an operator or a test calls.
CREATE OR REPLACE FUNCTION stats_fold() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM stats_fold_up_to(1000000);
    PERFORM breakdown_fold_up_to(1000000);
END $$;

-- The trigger's fold (005) stays 005's alone: it runs inside a writer's statement,
-- and a pair catching up would fold up to a million events there, holding every
-- writer. Pairs are made and folded by the service; without one running, their
-- readers read what the pairs have not counted from events (exact, only slower).
CREATE OR REPLACE FUNCTION stats_try_fold() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('transaction_isolation') = 'read committed' AND pg_try_advisory_xact_lock(727401, 2) THEN
        PERFORM stats_fold_up_to(1000000);
    END IF;
END $$;
