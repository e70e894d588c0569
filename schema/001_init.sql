-- eventservice schema, version 001.
--
-- Idempotent on purpose: the service applies it at start-up (recording it in
-- schema_migrations), and the same file runs unchanged as a
-- docker-entrypoint-initdb.d script, after which the service's own run is a no-op.

CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Derived per-session summary. Maintained by the events trigger below (never by
-- application code), so plain-SQL writers keep it right too.
CREATE TABLE IF NOT EXISTS sessions (
    id          uuid PRIMARY KEY,
    start_ms    bigint,            -- earliest SESSION_START timestamp
    end_ms      bigint,            -- latest SESSION_END timestamp
    event_count bigint NOT NULL DEFAULT 0,  -- EVENT entries only
    seen        bigint GENERATED ALWAYS AS IDENTITY,  -- first-seen order for GET /sessions
    first_seen  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS sessions_seen ON sessions (seen);

CREATE TABLE IF NOT EXISTS event_names (
    id   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE CHECK (char_length(name) BETWEEN 1 AND 255)
);

-- The append-only log. Its primary key is the SSE stream position.
-- No foreign keys: they were most of PostgreSQL's CPU per row (see README,
-- "Performance"). Instead the statement trigger creates the session row in the
-- same statement, and name ids only come from event_names (event_name_id()).
CREATE TABLE IF NOT EXISTS events (
    position   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id uuid NOT NULL,
    type       text NOT NULL CHECK (type IN ('SESSION_START', 'EVENT', 'SESSION_END')),
    ts         bigint NOT NULL CHECK (ts >= 0 AND ts < 253402300800000),
    name_id    integer,
    data       json,
    CHECK ((type = 'EVENT') = (name_id IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS events_session_ts ON events (session_id, ts, position);

-- Idempotency of uploads: one row per committed (scope, batch_id). The scope is the
-- connection's sessionId, or the nil UUID for connections without one.
CREATE TABLE IF NOT EXISTS ingest_batches (
    scope      uuid NOT NULL,
    batch_id   text NOT NULL,
    accepted   integer NOT NULL,
    PRIMARY KEY (scope, batch_id)
);

-- Where this database's stream positions start. Each database starts at a random
-- offset, so a Last-Event-ID from another database is almost surely outside
-- [base, current] and gets an explicit reset instead of a silent gap.
CREATE TABLE IF NOT EXISTS stream_meta (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    base      bigint NOT NULL
);

DO $$
DECLARE
    chosen bigint := 1000000000000 + floor(random() * 8000000000000000)::bigint;
BEGIN
    INSERT INTO stream_meta (base) VALUES (chosen) ON CONFLICT DO NOTHING;
    IF FOUND THEN
        EXECUTE format('ALTER TABLE events ALTER COLUMN position RESTART WITH %s', chosen);
    END IF;
END $$;

CREATE OR REPLACE FUNCTION event_name_id(wanted text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    found_id integer;
BEGIN
    SELECT id INTO found_id FROM event_names WHERE name = wanted;
    IF found_id IS NULL THEN
        INSERT INTO event_names (name) VALUES (wanted)
        ON CONFLICT (name) DO NOTHING RETURNING id INTO found_id;
        IF found_id IS NULL THEN
            SELECT id INTO found_id FROM event_names WHERE name = wanted;
        END IF;
    END IF;
    RETURN found_id;
END $$;

-- Commit-ordered positions. Every INSERT/COPY into events first takes this
-- transaction-level advisory lock, so the identity values it draws afterwards are
-- larger than those of every transaction that committed before, and no later one
-- can commit before it releases the lock at its own commit (locks are released
-- after the commit is visible). Hence "position > N" replay never skips a row
-- that commits late with a smaller position -- for plain-SQL writers too.
CREATE OR REPLACE FUNCTION events_serialize_writers() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(727401, 1);
    RETURN NULL;
END $$;

-- One statement, one NOTIFY carrying only the highest new position (a few bytes,
-- never near the 8000-byte limit), plus the session rows, so no event is ever
-- orphaned and start/end stay min/max whatever the arrival order.
CREATE OR REPLACE FUNCTION events_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    top bigint;
BEGIN
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
    SELECT max(position) INTO top FROM new_rows;
    IF top IS NOT NULL THEN
        PERFORM pg_notify('eventservice_events', top::text);
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS events_serialize_writers ON events;
CREATE TRIGGER events_serialize_writers
    BEFORE INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_serialize_writers();

DROP TRIGGER IF EXISTS events_after_insert ON events;
CREATE TRIGGER events_after_insert
    AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION events_after_insert();
