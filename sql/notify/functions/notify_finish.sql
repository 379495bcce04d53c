-- Close an event's fan-out once its audience is used up and every chunk is done: status
-- 'done' and, for an explicit list, how many ids named nobody. False while work remains.
-- A cancelled event is closed as it is.
CREATE FUNCTION notify_finish(p_event uuid) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    ev events%ROWTYPE;
    ids text[];
    missing bigint;
BEGIN
    SELECT * INTO ev FROM events AS e WHERE e.id = p_event FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF ev.status IN ('done', 'cancelled') THEN
        RETURN true;
    END IF;
    IF notify_audience_bound(ev.recipients, coalesce(ev.cursor, ''), 1) IS NOT NULL
       OR EXISTS (SELECT 1 FROM event_chunks AS c
                  WHERE c.event_id = p_event AND c.covered IS NULL) THEN
        RETURN false;
    END IF;
    ids := ARRAY(SELECT DISTINCT jsonb_array_elements_text(ev.recipients -> 'user_ids'));
    -- Counted apart from the UPDATE: on Citus a statement that writes and reads a
    -- reference table after the fan-out's parallel writes is refused.
    missing := cardinality(ids) - (SELECT count(*) FROM users AS u WHERE u.id = ANY(ids));
    UPDATE events AS e
    SET status = 'done', materialized_at = now(), updated_at = now(), no_recipient = missing
    WHERE e.id = p_event;
    RETURN true;
END
$$;
