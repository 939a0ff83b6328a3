-- SQLite's 0008_installations: each workspace's installation (its `secret` is the bot's ciphertext,
-- never a token in clear), OAuth states not yet used, and the token-refresh locks.
CREATE TABLE installations (
    platform TEXT NOT NULL,
    enterprise_id TEXT NOT NULL DEFAULT '',
    team_id TEXT NOT NULL DEFAULT '',
    is_enterprise_install BOOLEAN NOT NULL DEFAULT FALSE,
    secret TEXT NOT NULL,
    expires_at DOUBLE PRECISION,
    installed_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (platform, enterprise_id, team_id)
);

CREATE TABLE oauth_states (
    state TEXT PRIMARY KEY,
    expires_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE installation_locks (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until DOUBLE PRECISION NOT NULL
);
