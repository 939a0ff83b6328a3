-- The web gallery: full-text search over prompts (FTS5, kept in sync by triggers) and the
-- indexes its newest-first pages walk (one tenant, or every tenant for the operator).
CREATE VIRTUAL TABLE jobs_fts USING fts5(
    prompt,
    job_id UNINDEXED,
    tokenize = 'porter unicode61 remove_diacritics 2'
);

INSERT INTO jobs_fts (prompt, job_id) SELECT prompt, id FROM jobs;

CREATE TRIGGER jobs_fts_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO jobs_fts (prompt, job_id) VALUES (new.prompt, new.id);
END;

CREATE TRIGGER jobs_fts_update AFTER UPDATE OF prompt ON jobs BEGIN
    DELETE FROM jobs_fts WHERE job_id = old.id;
    INSERT INTO jobs_fts (prompt, job_id) VALUES (new.prompt, new.id);
END;

CREATE TRIGGER jobs_fts_delete AFTER DELETE ON jobs BEGIN
    DELETE FROM jobs_fts WHERE job_id = old.id;
END;

CREATE INDEX jobs_gallery ON jobs(platform, workspace_id, created_at, id);
CREATE INDEX jobs_created ON jobs(created_at, id);
-- The filters' choices (distinct users, channels, pipelines of a tenant) read these alone.
CREATE INDEX jobs_tenant_users ON jobs(platform, workspace_id, user_id);
CREATE INDEX jobs_tenant_channels ON jobs(platform, workspace_id, channel_id);
CREATE INDEX jobs_tenant_pipelines ON jobs(platform, workspace_id, pipeline);
