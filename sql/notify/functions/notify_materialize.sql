-- One worker's whole fan-out step, for a single caller (the inline path of notify_event(),
-- tests): claim a chunk, materialize it, and close the event when nothing is left.
-- Returns the recipients covered; fewer than `chunk` means the event is done.
CREATE FUNCTION notify_materialize(p_event uuid, chunk integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    claimed record;
    covered integer := 0;
BEGIN
    SELECT * INTO claimed FROM notify_claim_chunk(p_event, chunk);
    IF FOUND THEN
        covered := notify_materialize_chunk(p_event, claimed.lo, claimed.hi);
    END IF;
    IF covered < chunk THEN
        PERFORM notify_finish(p_event);
    END IF;
    RETURN covered;
END
$$;
