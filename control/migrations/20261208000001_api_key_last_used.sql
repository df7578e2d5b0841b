-- wrenn control-plane schema, version 3: when each API key was last used.
--
-- Written by the authenticator at most once a minute per key and control
-- plane (Unix milliseconds; NULL = never). Same dialect rules as version 1.

ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
