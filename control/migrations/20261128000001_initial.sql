-- wrenn control-plane schema, version 1.
--
-- Written in the SQL that SQLite and PostgreSQL both accept, so one migration
-- set serves both stores. Times are Unix milliseconds (BIGINT); unsigned
-- protocol numbers are stored bit-for-bit in BIGINT.

CREATE TABLE hosts (
    id TEXT PRIMARY KEY,
    agent_address TEXT NOT NULL,
    proxy_address TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE sandboxes (
    id TEXT PRIMARY KEY,
    host_id TEXT NOT NULL,
    -- 'starting', 'running', 'paused' or 'stopped'
    state TEXT NOT NULL,
    template TEXT NOT NULL,
    vcpus BIGINT NOT NULL,
    memory_mb BIGINT NOT NULL,
    disk_mb BIGINT NOT NULL,
    internet BOOLEAN NOT NULL,
    timeout_secs BIGINT NOT NULL,
    address TEXT NOT NULL DEFAULT '',
    generation BIGINT NOT NULL DEFAULT 0,
    backend TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    updated_at BIGINT NOT NULL,
    stopped_at BIGINT,
    stop_reason TEXT NOT NULL DEFAULT ''
);

CREATE INDEX sandboxes_state_created_idx ON sandboxes (state, created_at);
CREATE INDEX sandboxes_host_idx ON sandboxes (host_id, state);

CREATE TABLE sandbox_metadata (
    sandbox_id TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    meta_key TEXT NOT NULL,
    meta_value TEXT NOT NULL,
    PRIMARY KEY (sandbox_id, meta_key)
);

CREATE INDEX sandbox_metadata_kv_idx ON sandbox_metadata (meta_key, meta_value);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    -- SHA-256 of the whole key, lowercase hex. The key itself is never stored.
    key_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
