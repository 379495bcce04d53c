-- One of the per-channel rules of a notification, shared by the instant fan-out
-- (notify_materialize_chunk()) and the digests' (flush_digests()) so that both send by
-- the same rules. Both call it once per type, not per row. PL/pgSQL: Citus plans no SQL
-- function that reads its tables with parameters.
--
-- The channels a type is sent on: each of its channels at once, and its escalation
-- channel escalation_after_s later.
CREATE FUNCTION notify_type_routes(p_type text)
RETURNS TABLE (channel text, kind text, escalation boolean, delay_s float8)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT c.name, c.kind, false, 0::float8
    FROM notify_event_types AS t
    CROSS JOIN unnest(t.channels) AS r(name)
    JOIN notify_channels AS c ON c.name = r.name
    WHERE t.name = p_type
    UNION ALL
    SELECT c.name, c.kind, true, t.escalation_after_s
    FROM notify_event_types AS t
    JOIN notify_channels AS c ON c.name = t.escalation_channel
    WHERE t.name = p_type;
END
$$;
