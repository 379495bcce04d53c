-- Claim the next chunk of an event's audience for one fan-out worker: up to `chunk`
-- recipients after the event's cursor, recorded in event_chunks and the cursor moved past
-- it, in a short transaction of its own so that several workers materialize chunks side
-- by side. When the audience is used up, a chunk whose worker died (unfinished, and not
-- locked by a live worker) is handed out again. No row: nothing is left to claim (a
-- cancelled event has nothing left). FOR NO KEY UPDATE serializes the claims without
-- waiting for the chunks being materialized (they hold the row FOR KEY SHARE).
CREATE FUNCTION notify_claim_chunk(p_event uuid, chunk integer)
RETURNS TABLE (lo text, hi text)
LANGUAGE plpgsql AS $$
DECLARE
    ev events%ROWTYPE;
    bound text;
BEGIN
    SELECT * INTO ev FROM events AS e WHERE e.id = p_event FOR NO KEY UPDATE;
    IF NOT FOUND OR ev.status IN ('done', 'cancelled') THEN
        RETURN;
    END IF;
    bound := notify_audience_bound(ev.recipients, coalesce(ev.cursor, ''), chunk);
    IF bound IS NOT NULL THEN
        INSERT INTO event_chunks (event_id, lo, hi) VALUES (p_event, coalesce(ev.cursor, ''), bound);
        UPDATE events AS e SET cursor = bound, status = 'materializing', updated_at = now()
        WHERE e.id = p_event;
        RETURN QUERY SELECT coalesce(ev.cursor, ''), bound;
        RETURN;
    END IF;
    RETURN QUERY
        SELECT c.lo, c.hi FROM event_chunks AS c
        WHERE c.event_id = p_event AND c.covered IS NULL
        ORDER BY c.lo
        LIMIT 1
        FOR UPDATE SKIP LOCKED;
END
$$;
