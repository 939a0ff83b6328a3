-- The story scene and the image step's cost as columns (copied from state_json by the store on
-- every write of the state), so neither the gallery nor the spend rules read them out of JSON;
-- and `private`: a job made where not everyone may look (a DM, a private channel), shown only
-- to its owner and the tenant's admins.
ALTER TABLE jobs ADD COLUMN story_scene INTEGER;
ALTER TABLE jobs ADD COLUMN image_step_cost REAL;
ALTER TABLE jobs ADD COLUMN private INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET
    story_scene = CAST(json_extract(state_json, '$.story_scene') AS INTEGER),
    image_step_cost = CAST(json_extract(state_json, '$.image_step_cost') AS REAL)
WHERE json_extract(state_json, '$.story_scene') IS NOT NULL OR json_extract(state_json, '$.image_step_cost') IS NOT NULL;
