-- eventservice schema, version 008: session trees stored once a session goes quiet.
--
-- Idempotent like 001: applied by the service at start-up and usable unchanged
-- as a docker-entrypoint-initdb.d script (after 001-007).
--
-- A cold GET /session of a 1,000-event session read its rows from about 1,000
-- heap pages (sessions are ingested interleaved, so one session's rows are spread
-- over the table) and encoded them: ~5 ms of PostgreSQL CPU per tree (see
-- docs/performance.md, "Cold GET /session"). Sessions stop changing soon after
-- they end, so the service stores each quiet session's encoded children once
-- (app/reads/tree_store.py) and GET /session reads one row instead.
--
-- A stored tree is served only while it is provably current: it carries the
-- (start_ms, end_ms, event_count) of the sessions row it was built from, in the
-- same snapshot as the events it encodes. events is append-only and its statement
-- trigger moves one of those three in the statement of every change that alters a
-- tree (an EVENT adds to event_count; a SESSION_START/END that moves start or end
-- moves them), whoever the writer is, so an equal triple names the same tree (the
-- per-process cache, app/reads/tree_cache.py, relies on the same fact). A tree of a
-- session that lost entries to retention is never served (the reader checks
-- retained_from in the same statement) and is deleted by the retention run.
--
-- No trigger changes: which sessions changed is read back by position, beside the
-- writers, like the stats fold (the watermark only decides what gets rebuilt, never
-- what is served, so a missed change costs a cold read, never a stale one).

-- The encoded children of a session (the bytes between "children":[ and ]),
-- with the version they were built at. Compressed by TOAST (pglz).
CREATE TABLE IF NOT EXISTS session_trees (
    session_id  uuid PRIMARY KEY,
    start_ms    bigint,
    end_ms      bigint,
    event_count bigint NOT NULL,
    children    bytea NOT NULL,
    built_at    timestamptz NOT NULL DEFAULT now()
);

-- Sessions changed since their tree was (or could have been) built, and when the
-- service last saw them change: built once that is long enough ago.
CREATE TABLE IF NOT EXISTS session_trees_pending (
    session_id uuid PRIMARY KEY,
    changed_at timestamptz NOT NULL
);

-- The last position whose session the builder has put into session_trees_pending.
-- It starts before the first position, so an existing database's sessions are
-- built too (read in slices, beside the writers).
CREATE TABLE IF NOT EXISTS session_trees_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    through   bigint NOT NULL
);
INSERT INTO session_trees_state (through)
SELECT coalesce((SELECT min(position) FROM events), (SELECT base FROM stream_meta)) - 1
ON CONFLICT (singleton) DO NOTHING;
