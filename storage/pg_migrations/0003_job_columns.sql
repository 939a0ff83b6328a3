-- SQLite's 0007_job_columns: the story scene and the image step's cost as columns (copied from
-- state_json by the store on every write of the state), and `private` (a job shown only to its
-- owner and the tenant's admins).
ALTER TABLE jobs
    ADD COLUMN story_scene INTEGER,
    ADD COLUMN image_step_cost DOUBLE PRECISION,
    ADD COLUMN private BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE jobs SET
    story_scene = (state_json ->> 'story_scene')::numeric::integer,
    image_step_cost = (state_json ->> 'image_step_cost')::double precision
WHERE state_json ?| array['story_scene', 'image_step_cost'];
