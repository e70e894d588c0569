-- eventservice schema, version 003: the database guards its own invariants.
--
-- Idempotent like 001: applied by the service at start-up and usable unchanged
-- as a docker-entrypoint-initdb.d script.
--
-- events is an append-only log: stream positions, the sessions summary and every
-- process's session-tree cache are derived from it and only ever move forward.
-- An UPDATE, DELETE or TRUNCATE by plain SQL would leave them stale (a deleted
-- child kept being served) or make positions go backwards (TRUNCATE ... RESTART
-- IDENTITY silenced every stream), so the database refuses them, and refuses an
-- EVENT whose name_id names nothing. These triggers are separate from 001's
-- (events_serialize_writers, events_after_insert), which they leave alone.

CREATE OR REPLACE FUNCTION events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events is append-only: % is refused (stream positions and session summaries only move forward)', TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'Append new entries instead (INSERT, or upload over /ws). To discard everything, '
                     'start a fresh database: stream clients then get a reset.';
END $$;

DROP TRIGGER IF EXISTS events_append_only ON events;
CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

DROP TRIGGER IF EXISTS events_no_truncate ON events;
CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

-- No foreign key on name_id (see 001: they were most of PostgreSQL's CPU per row);
-- one probe per distinct name of the statement instead.
CREATE OR REPLACE FUNCTION events_check_names() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    missing integer;
BEGIN
    SELECT d.name_id INTO missing
      FROM (SELECT DISTINCT name_id FROM checked_rows WHERE name_id IS NOT NULL) d
     WHERE NOT EXISTS (SELECT 1 FROM event_names n WHERE n.id = d.name_id)
     LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'events.name_id % is not in event_names', missing
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'Take name ids from event_names, e.g. event_name_id(''my-event'') inserts the name when it is new.';
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS events_check_names ON events;
CREATE TRIGGER events_check_names
    AFTER INSERT ON events
    REFERENCING NEW TABLE AS checked_rows
    FOR EACH STATEMENT EXECUTE FUNCTION events_check_names();

-- batch_ids are remembered for BATCH_ID_RETENTION_HOURS; the service prunes older
-- ones by this column (rows from before this migration count from now).
ALTER TABLE ingest_batches ADD COLUMN IF NOT EXISTS claimed_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX IF NOT EXISTS ingest_batches_claimed_at ON ingest_batches (claimed_at);
