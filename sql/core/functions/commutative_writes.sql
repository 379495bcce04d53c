-- Citus locks every shard of a multi-shard upsert or update against every other such
-- statement until commit, unless citus.all_modifications_commutative is on. The fan-out
-- and the digest flush write new rows (the flush stamps items under its own lock), so
-- they turn it on for their own statements and chunks and flushes run side by side;
-- PostgreSQL still locks each row. Sets it to `setting` for the rest of the transaction
-- and returns what it was, for the caller to put back; where Citus is not loaded there is
-- no such setting (NULL), and a plain role may not make one, so nothing is set.
CREATE FUNCTION commutative_writes(setting text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    before text := current_setting('citus.all_modifications_commutative', true);
BEGIN
    IF before IS NOT NULL AND setting IS NOT NULL THEN
        PERFORM set_config('citus.all_modifications_commutative', setting, true);
    END IF;
    RETURN before;
END
$$;
