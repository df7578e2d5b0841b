-- wrenn control-plane schema, version 2: templates built from recipes.
--
-- The image lives on the host that built it (`host_id`); this is the record
-- the control plane lists, hands to creates as defaults, and refuses to
-- remove while sandboxes use it. Same dialect rules as version 1.

CREATE TABLE templates (
    name TEXT PRIMARY KEY,
    host_id TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    -- SHA-256 (hex) over the recipe and the digests of its sources.
    recipe_digest TEXT NOT NULL,
    -- Defaults for exec and PTY in the template's sandboxes ('' = none).
    default_user TEXT NOT NULL DEFAULT '',
    default_workdir TEXT NOT NULL DEFAULT '',
    -- START and READY of the recipe ('' = none).
    start_command TEXT NOT NULL DEFAULT '',
    ready_command TEXT NOT NULL DEFAULT '',
    -- The build's output, capped by the builder.
    build_log TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The recipe's ENV: defaults of the template's sandboxes (a recipe's
-- variables, not a create's, which are never stored).
CREATE TABLE template_env (
    template_name TEXT NOT NULL REFERENCES templates (name) ON DELETE CASCADE,
    env_key TEXT NOT NULL,
    env_value TEXT NOT NULL,
    PRIMARY KEY (template_name, env_key)
);
