-- eventservice schema, version 009: the names and the session summaries refuse the
-- plain-SQL changes that would make a cached or stored tree lie.
--
-- Idempotent like 001: applied by the service at start-up and usable unchanged
-- as a docker-entrypoint-initdb.d script (after 001-008).
--
-- A session tree is cached (app/reads/tree_cache.py) and stored (008) under the
-- version (start_ms, end_ms, event_count) of its sessions row; the events trigger
-- moves that version on every change to the session's entries, whoever writes
-- them. Two plain-SQL changes would leave a tree current under an unchanged
-- version: renaming or deleting an event_names row (every tree showing that name
-- would keep the old one), and deleting a sessions row (the next entries would
-- recreate it, and its count could climb back to the stored version with other
-- entries). Both are refused, as 003 refuses changes to events; names are only
-- ever added (event_name_id()), and sessions rows stay, as retention keeps them.
-- UPDATE of sessions is left to the events trigger's upsert; it is documented as
-- the trigger's alone (docs/reads.md).

CREATE OR REPLACE FUNCTION summaries_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is kept by the service: % is refused (cached and stored session trees rely on it)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = CASE TG_TABLE_NAME
                       WHEN 'event_names' THEN 'Names are only ever added (event_name_id(''name'')); a new name for new events is a new row.'
                       ELSE 'Session summaries follow the entries of events; old entries are removed by retention (RETENTION_DAYS), which keeps the summaries.'
                     END;
END $$;

DROP TRIGGER IF EXISTS event_names_append_only ON event_names;
CREATE TRIGGER event_names_append_only BEFORE UPDATE OR DELETE ON event_names
    FOR EACH STATEMENT EXECUTE FUNCTION summaries_refuse_change();
DROP TRIGGER IF EXISTS event_names_no_truncate ON event_names;
CREATE TRIGGER event_names_no_truncate BEFORE TRUNCATE ON event_names
    FOR EACH STATEMENT EXECUTE FUNCTION summaries_refuse_change();
DROP TRIGGER IF EXISTS sessions_no_delete ON sessions;
CREATE TRIGGER sessions_no_delete BEFORE DELETE ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION summaries_refuse_change();
DROP TRIGGER IF EXISTS sessions_no_truncate ON sessions;
CREATE TRIGGER sessions_no_truncate BEFORE TRUNCATE ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION summaries_refuse_change();
