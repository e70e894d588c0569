-- eventservice schema, version 007: retention. events becomes a table partitioned
-- by stream position, so old entries go in whole pieces (DETACH + DROP), never
-- row by row.
--
-- Idempotent like 001: applied by the service at start-up and usable unchanged
-- as a docker-entrypoint-initdb.d script (after 001-005).
--
-- Why by position and not by a stored-at column: position is the primary key and
-- grows with store time (writers are serialised, see 001), so a partition key of
-- position keeps the primary key as it is (a partitioned table's unique keys must
-- contain the partition key), keeps the replay-by-position and session-tree
-- indexes per partition, and lets the existing table become the first piece
-- without a new column (adding one with a default of now() rewrites the table).
-- A piece is a range of positions [lo, hi) whose store-time bounds are recorded
-- in retention_pieces: opened when the sequence first pointed into it, closed when
-- the service moved the sequence to the next piece (retention_roll()). Pieces
-- are 10^12 positions wide: no ingest fills one before its time is up.
--
-- Migration of an existing table: it is renamed events_p0, its identity becomes
-- the new parent's (same sequence value), and it is attached as the piece
-- [MINVALUE, next position) after a CHECK constraint that proves the bound, so
-- ATTACH skips its scan; adding that CHECK reads the table once (no rewrite);
-- its indexes are adopted as the partitions of the parent's indexes as they are.

SELECT pg_advisory_xact_lock(727401, 1);
SELECT pg_advisory_xact_lock(727401, 2);

CREATE TABLE IF NOT EXISTS retention_pieces (
    name      text PRIMARY KEY,
    lo        bigint NOT NULL,           -- first position of the piece (NULL-free: MINVALUE is -2^63)
    hi        bigint NOT NULL,           -- first position past it
    opened_at timestamptz NOT NULL,      -- entries stored at or after this
    closed_at timestamptz,               -- ... and before this; NULL while the sequence points into it
    state     text NOT NULL DEFAULT 'attached' CHECK (state IN ('attached', 'removing'))
);

-- What has gone: every entry at or below removed_through is removed; every entry
-- stored at or after retained_from is retained. NULLs: nothing removed yet.
CREATE TABLE IF NOT EXISTS retention_state (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    removed_through  bigint,
    retained_from    timestamptz,
    last_removal_at  timestamptz,
    last_removal_rows bigint,
    last_removal_ms  double precision
);
INSERT INTO retention_state DEFAULT VALUES ON CONFLICT DO NOTHING;

DO $$
DECLARE
    next_position bigint;
    spare_hi bigint;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'events'::regclass) THEN
        RETURN;  -- already partitioned: this file ran before (as an initdb script)
    END IF;
    LOCK TABLE events IN ACCESS EXCLUSIVE MODE;
    SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END INTO next_position FROM events_position_seq;

    ALTER TABLE events RENAME TO events_p0;
    ALTER INDEX events_pkey RENAME TO events_p0_pkey;
    ALTER INDEX events_session_ts RENAME TO events_p0_session_ts;
    ALTER INDEX IF EXISTS events_ts_brin RENAME TO events_p0_ts_brin;
    ALTER INDEX IF EXISTS events_name_ts RENAME TO events_p0_name_ts;
    DROP TRIGGER IF EXISTS events_serialize_writers ON events_p0;
    DROP TRIGGER IF EXISTS events_after_insert ON events_p0;
    DROP TRIGGER IF EXISTS events_check_names ON events_p0;
    DROP TRIGGER IF EXISTS events_append_only ON events_p0;
    DROP TRIGGER IF EXISTS events_no_truncate ON events_p0;
    ALTER TABLE events_p0 ALTER COLUMN position DROP IDENTITY;

    CREATE TABLE events (
        position   bigint GENERATED ALWAYS AS IDENTITY,
        session_id uuid NOT NULL,
        type       text NOT NULL CONSTRAINT events_type_check CHECK (type IN ('SESSION_START', 'EVENT', 'SESSION_END')),
        ts         bigint NOT NULL CONSTRAINT events_ts_check CHECK (ts >= 0 AND ts < 253402300800000),
        name_id    integer,
        data       json,
        -- Named as 001 named them: ATTACH matches a piece's constraints by name.
        CONSTRAINT events_check CHECK ((type = 'EVENT') = (name_id IS NOT NULL)),
        CONSTRAINT events_pkey PRIMARY KEY (position)
    ) PARTITION BY RANGE (position);
    EXECUTE format('ALTER TABLE events ALTER COLUMN position RESTART WITH %s', next_position);
    CREATE INDEX events_session_ts ON events (session_id, ts, position);
    CREATE INDEX events_ts_brin ON events USING brin (ts) WITH (pages_per_range = 32);

    -- The triggers of 001 and 003, now on the parent: they fire for every statement
    -- on events, whichever piece its rows land in.
    CREATE TRIGGER events_serialize_writers BEFORE INSERT ON events
        FOR EACH STATEMENT EXECUTE FUNCTION events_serialize_writers();
    CREATE TRIGGER events_after_insert AFTER INSERT ON events REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION events_after_insert();
    CREATE TRIGGER events_check_names AFTER INSERT ON events REFERENCING NEW TABLE AS checked_rows
        FOR EACH STATEMENT EXECUTE FUNCTION events_check_names();
    CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
        FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();
    CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
        FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

    -- The proof of the bound, read once; then ATTACH takes it instead of scanning.
    EXECUTE format('ALTER TABLE events_p0 ADD CONSTRAINT events_p0_bound CHECK (position < %s)', next_position);
    EXECUTE format('ALTER TABLE events ATTACH PARTITION events_p0 FOR VALUES FROM (MINVALUE) TO (%s)', next_position);
    ALTER TABLE events_p0 DROP CONSTRAINT events_p0_bound;
    INSERT INTO retention_pieces (name, lo, hi, opened_at, closed_at)
    VALUES ('events_p0', -9223372036854775808, next_position, '-infinity', clock_timestamp());
END $$;

-- 003's refusal, its hint now naming the supported way.
CREATE OR REPLACE FUNCTION events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events is append-only: % is refused (stream positions and session summaries only move forward)', TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'Append new entries instead (INSERT, or upload over /ws). Old entries are removed by retention '
                     '(RETENTION_DAYS), in whole pieces. To discard everything, start a fresh database: '
                     'stream clients then get a reset.';
END $$;

-- Every piece refuses what the parent refuses, also when named directly; a direct
-- INSERT into a piece would skip the writers' lock and the session upkeep, so it is
-- refused too (an INSERT into events does not fire a piece's statement triggers).
CREATE OR REPLACE FUNCTION events_refuse_piece_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'insert into events, not into its piece %', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE OR REPLACE FUNCTION retention_guard_piece(piece text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS events_append_only ON %I', piece);
    EXECUTE format('CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON %I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change()', piece);
    EXECUTE format('DROP TRIGGER IF EXISTS events_no_truncate ON %I', piece);
    EXECUTE format('CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON %I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change()', piece);
    EXECUTE format('DROP TRIGGER IF EXISTS events_piece_insert ON %I', piece);
    EXECUTE format('CREATE TRIGGER events_piece_insert BEFORE INSERT ON %I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_piece_insert()', piece);
END $$;

-- A new empty piece [lo, lo + 10^12), created on its own and then attached:
-- ATTACH takes SHARE UPDATE EXCLUSIVE on events, which neither inserts nor reads
-- wait for (CREATE TABLE ... PARTITION OF would take ACCESS EXCLUSIVE).
CREATE OR REPLACE FUNCTION retention_add_piece(lo bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    piece text := 'events_p' || lo::text;
BEGIN
    IF EXISTS (SELECT 1 FROM retention_pieces WHERE name = piece) THEN
        RETURN piece;
    END IF;
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', piece);
    EXECUTE format('ALTER TABLE %I ALTER COLUMN position DROP IDENTITY IF EXISTS', piece);
    EXECUTE format('ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)', piece, lo, lo + 1000000000000);
    PERFORM retention_guard_piece(piece);
    INSERT INTO retention_pieces (name, lo, hi, opened_at) VALUES (piece, lo, lo + 1000000000000, 'infinity');
    RETURN piece;
END $$;

DO $$
DECLARE
    piece record;
    in_use text;
BEGIN
    FOR piece IN SELECT name FROM retention_pieces LOOP
        PERFORM retention_guard_piece(piece.name);
    END LOOP;
    -- The piece in use (the sequence points into it) and a spare one ahead.
    IF NOT EXISTS (SELECT 1 FROM retention_pieces WHERE closed_at IS NULL AND opened_at < 'infinity') THEN
        in_use := retention_add_piece((SELECT max(hi) FROM retention_pieces));
        UPDATE retention_pieces SET opened_at = clock_timestamp() WHERE name = in_use;
    END IF;
    PERFORM retention_add_piece((SELECT max(hi) FROM retention_pieces));
END $$;

-- Moves the sequence into the spare piece: the piece in use is closed (its store
-- time bounds are final), the spare one opened. Under the writers' lock, so every
-- entry of the closed piece is committed and every later one lands in the next;
-- the lock is held for the few microseconds of setval. clock_timestamp() after the
-- lock: every writer that stored into the closed piece started before it.
CREATE OR REPLACE FUNCTION retention_roll() RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    current_piece retention_pieces%ROWTYPE;
    spare retention_pieces%ROWTYPE;
    stamp timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(727401, 1);
    stamp := clock_timestamp();
    SELECT * INTO current_piece FROM retention_pieces WHERE closed_at IS NULL AND opened_at < 'infinity';
    SELECT * INTO spare FROM retention_pieces WHERE lo = current_piece.hi;
    IF spare.name IS NULL THEN
        RAISE EXCEPTION 'retention_roll(): no spare piece after %', current_piece.name;
    END IF;
    PERFORM setval(pg_get_serial_sequence('events', 'position'), spare.lo, false);
    UPDATE retention_pieces SET closed_at = stamp WHERE name = current_piece.name;
    UPDATE retention_pieces SET opened_at = stamp WHERE name = spare.name;
    RETURN spare.name;
END $$;

-- Marks the pieces to remove and records what their removal takes: pieces closed
-- more than window_seconds ago, oldest first, whose entries the stats fold has all
-- counted (the rollups must stay exact). removed_through and retained_from move
-- before any piece is detached, so a stream read that ends after the removal sees
-- them (app/routes/stream.py checks after each replay page). Returns every piece
-- marked, earlier marks a killed run left included.
CREATE OR REPLACE FUNCTION retention_mark(window_seconds double precision) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    piece retention_pieces%ROWTYPE;
    folded bigint := (SELECT position FROM stats_folded);
    top bigint;
BEGIN
    FOR piece IN SELECT * FROM retention_pieces
                  WHERE state = 'attached' AND closed_at < clock_timestamp() - make_interval(secs => window_seconds)
                  ORDER BY lo FOR UPDATE
    LOOP
        SELECT max(position) INTO top FROM events WHERE position >= piece.lo AND position < piece.hi;
        EXIT WHEN top IS NOT NULL AND (folded IS NULL OR top > folded);
        UPDATE retention_pieces SET state = 'removing' WHERE name = piece.name;
        UPDATE retention_state
           SET removed_through = greatest(removed_through, top),
               retained_from = greatest(retained_from, piece.closed_at);
    END LOOP;
    RETURN QUERY SELECT name FROM retention_pieces WHERE state = 'removing' ORDER BY lo;
END $$;

-- Name presences follow the window too: they are removed by hour (a BRIN index
-- finds them; they are appended in roughly hour order).
CREATE INDEX IF NOT EXISTS stats_name_session_hours_hour ON stats_name_session_hours USING brin (hour_ms);
