-- Settings changed in chat: per tenant (workspace or guild), per channel, per user; env values are the defaults.
CREATE TABLE settings (
    platform     TEXT NOT NULL,
    workspace_id TEXT NOT NULL DEFAULT '',
    scope        TEXT NOT NULL,
    scope_id     TEXT NOT NULL DEFAULT '',
    key          TEXT NOT NULL,
    value_json   TEXT NOT NULL,
    updated_by   TEXT,
    updated_at   REAL NOT NULL,
    PRIMARY KEY (platform, workspace_id, scope, scope_id, key)
);
