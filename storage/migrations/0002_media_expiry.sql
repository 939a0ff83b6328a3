-- Media retention: a job's files can be removed after VIDEOBOT_RETENTION_DAYS while its row stays.
ALTER TABLE jobs ADD COLUMN media_expired_at REAL;
CREATE INDEX jobs_finished ON jobs(finished_at);
