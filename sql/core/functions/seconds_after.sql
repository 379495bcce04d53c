-- `secs` seconds after `t`. A whole number of seconds takes no time zone, so this is
-- IMMUTABLE where timestamptz + interval is STABLE (a month or a day would depend on the
-- zone): Citus refuses a STABLE function of a column in an UPDATE it sends to the workers.
-- Not inlined (its body is STABLE), so the planner sees it as declared.
CREATE FUNCTION seconds_after(t timestamptz, secs float8) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT t + make_interval(secs => secs)
$$;
