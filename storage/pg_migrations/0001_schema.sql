-- The PostgreSQL schema, equal to SQLite's migrations 0001..0005 (storage/migrations/).
-- Times are seconds since the epoch in double precision (as SQLite's REAL), JSON is jsonb.
-- `seq` is the insertion order SQLite keeps as rowid (ties in created_at).
CREATE TABLE jobs (
    id                TEXT PRIMARY KEY,
    parent_id         TEXT REFERENCES jobs(id) DEFERRABLE INITIALLY IMMEDIATE,
    kind              TEXT NOT NULL,
    platform          TEXT NOT NULL,
    workspace_id      TEXT,
    channel_id        TEXT,
    user_id           TEXT NOT NULL,
    status_message_id TEXT,
    result_message_id TEXT,
    origin_json       JSONB NOT NULL DEFAULT '{}',
    prompt            TEXT NOT NULL,
    params_json       JSONB NOT NULL,
    pipeline          TEXT NOT NULL,
    provider          TEXT,
    model             TEXT,
    remote_id         TEXT,
    status            TEXT NOT NULL,
    progress          INTEGER NOT NULL DEFAULT 0,
    cost_estimate     DOUBLE PRECISION,
    cost_actual       DOUBLE PRECISION,
    output_path       TEXT,
    thumbnail_path    TEXT,
    error_code        TEXT,
    error_message     TEXT,
    state_json        JSONB NOT NULL DEFAULT '{}',
    lease_owner       TEXT,
    lease_until       DOUBLE PRECISION,
    created_at        DOUBLE PRECISION NOT NULL,
    started_at        DOUBLE PRECISION,
    finished_at       DOUBLE PRECISION,
    updated_at        DOUBLE PRECISION,
    deleted_at        DOUBLE PRECISION,
    media_expired_at  DOUBLE PRECISION,
    seq               BIGINT GENERATED ALWAYS AS IDENTITY
);

CREATE INDEX jobs_status ON jobs(status);
CREATE INDEX jobs_user ON jobs(platform, user_id, created_at);
CREATE INDEX jobs_status_message ON jobs(platform, status_message_id);
CREATE INDEX jobs_result_message ON jobs(platform, result_message_id);
CREATE INDEX jobs_parent ON jobs(parent_id);
CREATE INDEX jobs_finished ON jobs(finished_at);
CREATE INDEX jobs_queue ON jobs(status, created_at);
-- claim_queued: each user's waiting jobs, oldest first, without a sort.
CREATE INDEX jobs_waiting ON jobs(platform, workspace_id, user_id, created_at, seq) WHERE status = 'queued';
CREATE INDEX jobs_created ON jobs(created_at);
CREATE INDEX jobs_id_prefix ON jobs(id text_pattern_ops);

CREATE TABLE job_events (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id   TEXT NOT NULL REFERENCES jobs(id) DEFERRABLE INITIALLY IMMEDIATE,
    at       DOUBLE PRECISION NOT NULL,
    status   TEXT NOT NULL,
    progress INTEGER,
    detail   TEXT,
    -- The lease owner (storage.leases.Holder text) whose write added the event.
    runner   TEXT
);
CREATE INDEX job_events_job ON job_events(job_id, id);

CREATE TABLE pending_spends (
    token       TEXT PRIMARY KEY,
    platform    TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    job_json    JSONB NOT NULL,
    estimate    DOUBLE PRECISION NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending'
);
CREATE INDEX pending_spends_expiry ON pending_spends(state, expires_at);

CREATE TABLE settings (
    platform     TEXT NOT NULL,
    workspace_id TEXT NOT NULL DEFAULT '',
    scope        TEXT NOT NULL,
    scope_id     TEXT NOT NULL DEFAULT '',
    key          TEXT NOT NULL,
    value_json   JSONB NOT NULL,
    updated_by   TEXT,
    updated_at   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (platform, workspace_id, scope, scope_id, key)
);

-- Signals between processes; published with NOTIFY videobot_jobs, '<id>' (storage/pg/store.py).
CREATE TABLE job_signals (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    payload_json JSONB NOT NULL DEFAULT '{}',
    at           DOUBLE PRECISION NOT NULL
);
CREATE INDEX job_signals_at ON job_signals(at);

CREATE TABLE workers (
    id         TEXT PRIMARY KEY,
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    role       TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    last_seen  DOUBLE PRECISION NOT NULL,
    held       INTEGER NOT NULL DEFAULT 0
);
