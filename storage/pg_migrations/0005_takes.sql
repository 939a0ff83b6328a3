-- SQLite's 0009_takes: a set's take as a column (part of its set's one request).
ALTER TABLE jobs ADD COLUMN take INTEGER;
UPDATE jobs SET take = (state_json ->> 'take')::numeric::integer WHERE state_json ? 'take';
