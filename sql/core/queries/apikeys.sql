-- name: insert_api_key
-- returns: one row (id uuid, created_at timestamptz)
-- purpose: bin/apikey create: store a new producer key by its public prefix and the
--   SHA-256 of the whole key (the key itself is never stored).
INSERT INTO api_keys (producer, prefix, secret_hash, scopes)
VALUES (%(producer)s, %(prefix)s, %(secret_hash)s, %(scopes)s::text[])
RETURNING id, created_at;

-- name: find_api_key
-- returns: zero or one row (id uuid, producer text, secret_hash bytea, scopes text[],
--   revoked_at timestamptz, last_used_at timestamptz)
-- purpose: verify a presented key: found by its prefix, the hash is compared in Python in
--   constant time.
SELECT id, producer, secret_hash, scopes, revoked_at, last_used_at
FROM api_keys
WHERE prefix = %(prefix)s;

-- name: touch_api_key
-- returns: nothing
-- purpose: remember when a key was last used (on a verification cache miss only, so at
--   most every few seconds per key and process).
UPDATE api_keys SET last_used_at = now(), updated_at = now() WHERE id = %(id)s;

-- name: list_api_keys
-- returns: rows (prefix text, producer text, scopes text[], created_at timestamptz,
--   last_used_at timestamptz, revoked_at timestamptz), oldest first
-- purpose: bin/apikey list.
SELECT prefix, producer, scopes, created_at, last_used_at, revoked_at
FROM api_keys
ORDER BY created_at, prefix;

-- name: revoke_api_key
-- returns: zero or one row (producer text, revoked_at timestamptz): none for an unknown
--   prefix; a key revoked before keeps its first revocation time.
-- purpose: bin/apikey revoke: the key is refused from then on (running API processes
--   drop it from their verification cache within seconds).
UPDATE api_keys
SET revoked_at = coalesce(revoked_at, now()), updated_at = now()
WHERE prefix = %(prefix)s
RETURNING producer, revoked_at;
