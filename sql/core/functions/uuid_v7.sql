-- A UUID whose first 48 bits are the Unix time in milliseconds (the layout of RFC 9562's
-- version 7): ids made one after another sort together, so the outbox's unique index on
-- event_id grows at its right edge instead of touching a random page per row.
CREATE FUNCTION uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                                      FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;
