-- eventservice schema, version 002: rejected batches, kept for inspection.
--
-- Idempotent like 001: applied by the service at start-up and usable unchanged
-- as a docker-entrypoint-initdb.d script.
--
-- One row per batch answered with an ERROR (app/ingest/rejected.py). Bounded twice: the
-- frame is cut to REJECTED_MAX_FRAME_BYTES (frame_bytes keeps the full size) and
-- the service prunes the table to the newest REJECTED_MAX_ROWS rows, so neither a
-- flood of bad frames nor one huge frame can fill the disk.
--
-- Inspect with psql, e.g.:
--   SELECT id, received_at, error, session_id, left(frame, 80) AS frame, frame_bytes
--     FROM rejected_batches ORDER BY id DESC LIMIT 20;

CREATE TABLE IF NOT EXISTS rejected_batches (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),  -- when the frame arrived
    connection  text,             -- the connection id, as in the log lines (conn=...)
    session_id  uuid,             -- the connection's sessionId; NULL for relay connections
    batch       integer,          -- the frame's number on its connection, as in the ERROR
    batch_id    text,             -- the envelope's batch_id, when it was readable
    error       text NOT NULL,    -- the ERROR code (invalid_json, invalid_event, rate_limited, ...)
    message     text NOT NULL,    -- the ERROR message
    frame       text NOT NULL,    -- the start of the raw frame (NUL shown as \u0000)
    frame_bytes integer NOT NULL  -- the whole frame's size in bytes
);
