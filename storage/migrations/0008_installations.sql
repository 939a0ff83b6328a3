-- One deployment, many workspaces: each workspace's installation of the app (Slack's OAuth install),
-- the OAuth `state` values handed out and not yet used, and the locks that let one process at a time
-- refresh a workspace's rotating token. `secret` is ciphertext made by the bot (tokens and the rest of
-- the installation, encrypted): this database never holds a token in clear.
CREATE TABLE installations (
    platform TEXT NOT NULL,
    enterprise_id TEXT NOT NULL DEFAULT '',
    team_id TEXT NOT NULL DEFAULT '',
    is_enterprise_install INTEGER NOT NULL DEFAULT 0,
    secret TEXT NOT NULL,
    -- The bot token's expiry (token rotation), else NULL: in clear, so what needs refreshing can be told.
    expires_at REAL,
    installed_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (platform, enterprise_id, team_id)
);

CREATE TABLE oauth_states (
    state TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
);

CREATE TABLE installation_locks (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until REAL NOT NULL
);
