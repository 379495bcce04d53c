-- The id of the n-th row (from 0) of one bucket in a statement that writes many buckets'
-- rows at once on their own nodes (the fan-out pushed down to the Citus workers, where no
-- sequence may be called). The id sequences of outbox, notifications and digest_items
-- step by 65,536: one nextval() is a block of ids nobody else is given, and a row written
-- alone takes a whole block. A bulk statement takes blocks up front
-- (take_blocks()) and spends each on 1,024 rows of every bucket: block + n % 1024 * 64 +
-- bucket, so two buckets never meet and each worker numbers its own rows. Not STRICT, so
-- that the planner inlines it (see uuid_v7_of()).
CREATE FUNCTION block_id(blocks bigint[], n bigint, bucket smallint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT blocks[1 + n / 1024] + n % 1024 * 64 + bucket
$$;
