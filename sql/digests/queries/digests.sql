-- name: flush_digests
-- returns: one row (flushed integer): the digests sent (0 also when another flush holds
--   the lock)
-- purpose: send every due digest as one notification per recipient, type and key, with
--   its outbox rows, in one set-based statement (sql/digests/functions/flush_digests.sql:
--   why it is safe beside other flushes and the intake is written there).
SELECT flush_digests() AS flushed;

-- name: open_digests
-- returns: rows (user_id text, type text, digest_key text, items bigint, first_at
--   timestamptz, last_at timestamptz, due_at timestamptz), soonest due first
-- purpose: what is gathering for one recipient (NULL: everyone), for ops and tests: the
--   open_digests view, which says when each digest is due.
SELECT user_id, type, digest_key, items, first_at, last_at, due_at
FROM open_digests
WHERE %(user_id)s::text IS NULL OR user_id = %(user_id)s::text
ORDER BY due_at NULLS LAST, user_id, type, digest_key;
