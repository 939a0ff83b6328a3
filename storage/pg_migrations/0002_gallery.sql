-- The web gallery on PostgreSQL (SQLite's 0006_gallery): search over prompts and the indexes its
-- newest-first pages walk. Search: English stemming ('english' configuration) over the prompt
-- lower-cased with Latin diacritics folded (translate(), so the column can be generated: no
-- extension needed); storage/pg/gallery.py folds the searched words with the same table.
ALTER TABLE jobs ADD COLUMN search tsvector GENERATED ALWAYS AS (
    to_tsvector('english'::regconfig, translate(lower(prompt),
        'àáâãäåçèéêëìíîïñòóôõöùúûüýÿāăąćĉċčďēĕėęěĝğġģĥĩīĭįĵķĺļľńņňōŏőŕŗřśŝşšţťũūŭůűųŵŷźżžſơưǎǐǒǔǖǘǚǜǟǡǧǩǫǭǰǵǹǻȁȃȅȇȉȋȍȏȑȓȕȗșțȟȧȩȫȭȯȱȳ',
        'aaaaaaceeeeiiiinooooouuuuyyaaaccccdeeeeegggghiiiijklllnnnooorrrssssttuuuuuuwyzzzsouaiouuuuuaagkoojgnaaaeeiioorruusthaeooooy'))
) STORED;
CREATE INDEX jobs_search ON jobs USING gin (search);
CREATE INDEX jobs_gallery ON jobs(platform, workspace_id, created_at, id);
CREATE INDEX jobs_created_id ON jobs(created_at, id);
-- The filters' choices (distinct users, channels, pipelines of a tenant).
CREATE INDEX jobs_tenant_users ON jobs(platform, workspace_id, user_id);
CREATE INDEX jobs_tenant_channels ON jobs(platform, workspace_id, channel_id);
CREATE INDEX jobs_tenant_pipelines ON jobs(platform, workspace_id, pipeline);
