-- A set's take as a column (copied from state_json with the state, as story_scene is): a take is
-- part of its set's one request, so the spend rules, the queue limit, the gallery and the stats
-- count the set, never the take.
ALTER TABLE jobs ADD COLUMN take INTEGER;
UPDATE jobs SET take = CAST(json_extract(state_json, '$.take') AS INTEGER) WHERE json_extract(state_json, '$.take') IS NOT NULL;
