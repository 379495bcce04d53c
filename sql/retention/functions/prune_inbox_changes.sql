-- One batch of the live inbox's change log past its age (at most batch_size rows, oldest
-- first), in the caller's transaction; how many went. A stream resumes from a position no
-- older than this age (service/notify/inbox_stream.py), so nothing it needs is pruned.
CREATE FUNCTION prune_inbox_changes(keep interval, batch_size integer) RETURNS bigint
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM inbox_changes
        WHERE ctid = ANY (ARRAY(
            SELECT ctid FROM inbox_changes
            WHERE created_at < now() - keep
            ORDER BY created_at
            LIMIT batch_size))
        RETURNING 1
    )
    SELECT count(*) FROM gone
$$;
