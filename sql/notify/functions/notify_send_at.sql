-- One of the per-channel rules of a notification, shared by the instant fan-out
-- (notify_materialize_chunk()) and the digests' (flush_digests()) so that both send by
-- the same rules. A single SQL expression, which the planner inlines into the calling
-- statement: no function call per row.
--
-- When a delivery owed at `owed_at` may go: then, or when the quiet hours it falls in end.
-- Most rows have no quiet hours: quiet_hours_end() is called only for those that do.
CREATE FUNCTION notify_send_at(owed_at timestamptz, tz text, quiet jsonb) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN quiet IS NULL THEN owed_at ELSE quiet_hours_end(owed_at, tz, quiet) END
$$;
