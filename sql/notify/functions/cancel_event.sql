-- Cancel an event: whatever has not gone out never will. Its fan-out job, if it has not
-- started (a future send_at waits as one), is removed; the fan-out still to come stops
-- (notify_claim_chunk() and notify_materialize_chunk() skip a cancelled event); its
-- pending deliveries, held and escalations included, are suppressed with reason
-- 'cancelled'. Deliveries already made stay as they are; a row a dispatcher holds at this
-- moment is suppressed too, and its attempt, if it went out, is in delivery_attempts.
-- FOR UPDATE waits for the chunks being materialized, so their rows are suppressed with
-- the rest. An event that was done with nothing pending stays done (nothing to cancel).
-- Returns the status before, the deliveries suppressed and whether the job was removed;
-- no row for an unknown event.
CREATE FUNCTION cancel_event(p_event uuid)
RETURNS TABLE (previous text, suppressed bigint, job_removed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    ev events%ROWTYPE;
    stopped bigint;
    removed boolean;
BEGIN
    SELECT * INTO ev FROM events AS e WHERE e.id = p_event FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    DELETE FROM procrastinate_jobs AS j
    WHERE j.queueing_lock = 'materialize:' || p_event AND j.status = 'todo';
    removed := FOUND;
    UPDATE outbox AS o SET status = 'suppressed', reason = 'cancelled', claimed_until = NULL,
                           updated_at = now()
    FROM notifications AS n
    WHERE n.event_id = p_event AND o.notification_id = n.id AND o.bucket = n.bucket
      AND o.status = 'pending';
    GET DIAGNOSTICS stopped = ROW_COUNT;
    IF ev.status <> 'done' OR stopped > 0 THEN
        UPDATE events AS e SET status = 'cancelled', updated_at = now() WHERE e.id = p_event;
    END IF;
    RETURN QUERY SELECT ev.status, stopped, removed;
END
$$;
