-- Past one machine: signals between processes, live workers, and which runner wrote each event.
-- Signals: a job changed; readers in other processes follow them by id (cursor), oldest first.
CREATE TABLE job_signals (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    payload_json TEXT NOT NULL DEFAULT '{}',
    at           REAL NOT NULL
);
CREATE INDEX job_signals_at ON job_signals(at);
-- One row per running videobot process, upserted by its heartbeat, removed on a clean stop.
CREATE TABLE workers (
    id         TEXT PRIMARY KEY,
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    role       TEXT NOT NULL,
    started_at REAL NOT NULL,
    last_seen  REAL NOT NULL,
    held       INTEGER NOT NULL DEFAULT 0
);
-- The lease owner (storage.leases.Holder text) whose write added the event; NULL: not a runner's write.
ALTER TABLE job_events ADD COLUMN runner TEXT;
-- The queue, oldest first (claim_queued, queue_stats).
CREATE INDEX jobs_queue ON jobs(status, created_at);
