-- Requests above the confirm threshold wait here, reserving nothing, until their owner confirms.
CREATE TABLE pending_spends (
    token       TEXT PRIMARY KEY,
    platform    TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    job_json    TEXT NOT NULL,
    estimate    REAL NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending'
);
CREATE INDEX pending_spends_expiry ON pending_spends(state, expires_at);
