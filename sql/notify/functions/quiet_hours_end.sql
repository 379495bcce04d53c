-- The end of a quiet-hours window (local times, may wrap midnight) that `at` falls in, in
-- time zone `tz`; `at` itself when it is outside the window or there is none.
CREATE FUNCTION quiet_hours_end(at timestamptz, tz text, quiet jsonb) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN quiet IS NULL OR s IS NULL OR e IS NULL OR s = e THEN at
        WHEN s < e AND t >= s AND t < e THEN (d + e) AT TIME ZONE tz
        WHEN s > e AND t >= s THEN ((d + 1) + e) AT TIME ZONE tz
        WHEN s > e AND t < e THEN (d + e) AT TIME ZONE tz
        ELSE at
    END
    FROM (SELECT (quiet ->> 'start')::time AS s, (quiet ->> 'end')::time AS e,
                 (at AT TIME ZONE tz)::time AS t, (at AT TIME ZONE tz)::date AS d) AS local
$$;
