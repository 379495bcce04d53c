-- name: insert_audit
-- returns: one row (id bigint, at timestamptz)
-- purpose: record one admin action or ops command: who (an admin username or
--   'cli:<os user>'), what, on which target, with the state before and after.
INSERT INTO audit_log (actor, action, target, before, after, client_ip)
VALUES (%(actor)s, %(action)s, %(target)s, %(before)s::jsonb, %(after)s::jsonb,
        %(client_ip)s)
RETURNING id, at;

-- name: list_audit
-- returns: rows (id bigint, at timestamptz, actor text, action text, target text,
--   before jsonb, after jsonb, client_ip text), newest first
-- purpose: the admin panel's audit page and the tests: the latest actions, optionally of
--   one actor or one action.
SELECT id, at, actor, action, target, before, after, client_ip
FROM audit_log
WHERE (%(actor)s::text IS NULL OR actor = %(actor)s::text)
  AND (%(action)s::text IS NULL OR action = %(action)s::text)
ORDER BY id DESC
LIMIT %(limit)s;
