-- One of the per-channel rules of a notification, shared by the instant fan-out
-- (notify_materialize_chunk()) and the digests' (flush_digests()) so that both send by
-- the same rules. A single SQL expression, which the planner inlines into the calling
-- statement: no function call per row.
--
-- The user's quiet hours of one channel, or NULL when none hold it back (none set, a
-- transactional category, or high priority).
CREATE FUNCTION notify_quiet_hours(
    transactional boolean, priority text, quiet_hours jsonb, channel text
) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN NOT transactional AND priority <> 'high' THEN quiet_hours -> channel END
$$;
