-- Enough blocks of `seq`'s ids for `rows` rows of one statement, however they fall into
-- buckets (block_id()): one block per 1,024 rows. Called on the coordinator, once per
-- statement, never per row.
CREATE FUNCTION take_blocks(seq regclass, rows bigint) RETURNS bigint[]
LANGUAGE sql VOLATILE AS $$
    SELECT ARRAY(SELECT nextval(seq) FROM generate_series(1, greatest(1, (rows + 1023) / 1024)))
$$;
