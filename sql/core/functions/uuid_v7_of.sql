-- uuid_v7()'s layout made from a time and a unique bigint instead of random bits, so that
-- a statement on the Citus workers (which may call no volatile function) names its rows:
-- the first 48 bits the time in milliseconds, then the version (7), the id's top bit, the
-- variant and its 62 low bits. Distinct ids give distinct uuids. Not STRICT, so that the
-- planner inlines it (a strict SQL function whose body is not strict runs once per row).
CREATE FUNCTION uuid_v7_of(at timestamptz, id bigint) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT encode(
        substring(int8send((extract(epoch FROM at) * 1000)::bigint) FROM 3)
        || substring(int8send(28672 | (id >> 62)) FROM 7)
        || int8send((id & 4611686018427387903) | (-9223372036854775807 - 1)),
        'hex')::uuid
$$;
