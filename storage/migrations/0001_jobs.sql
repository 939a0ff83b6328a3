CREATE TABLE jobs (
    id                TEXT PRIMARY KEY,
    parent_id         TEXT REFERENCES jobs(id),
    kind              TEXT NOT NULL,
    platform          TEXT NOT NULL,
    workspace_id      TEXT,
    channel_id        TEXT,
    user_id           TEXT NOT NULL,
    status_message_id TEXT,
    result_message_id TEXT,
    origin_json       TEXT NOT NULL DEFAULT '{}',
    prompt            TEXT NOT NULL,
    params_json       TEXT NOT NULL,
    pipeline          TEXT NOT NULL,
    provider          TEXT,
    model             TEXT,
    remote_id         TEXT,
    status            TEXT NOT NULL,
    progress          INTEGER NOT NULL DEFAULT 0,
    cost_estimate     REAL,
    cost_actual       REAL,
    output_path       TEXT,
    thumbnail_path    TEXT,
    error_code        TEXT,
    error_message     TEXT,
    state_json        TEXT NOT NULL DEFAULT '{}',
    lease_owner       TEXT,
    lease_until       REAL,
    created_at        REAL NOT NULL,
    started_at        REAL,
    finished_at       REAL,
    updated_at        REAL,
    deleted_at        REAL
);

CREATE INDEX jobs_status ON jobs(status);
CREATE INDEX jobs_user ON jobs(platform, user_id, created_at);
CREATE INDEX jobs_status_message ON jobs(platform, status_message_id);
CREATE INDEX jobs_result_message ON jobs(platform, result_message_id);
CREATE INDEX jobs_parent ON jobs(parent_id);

CREATE TABLE job_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id   TEXT NOT NULL REFERENCES jobs(id),
    at       REAL NOT NULL,
    status   TEXT NOT NULL,
    progress INTEGER,
    detail   TEXT
);

CREATE INDEX job_events_job ON job_events(job_id, id);
