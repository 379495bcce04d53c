-- When an open digest is due, by its type's window (NULL: the type is no longer in digest
-- mode, and its items wait): fixed, every_s after the first item; daily, at the next `at`
-- after the first item in the recipient's time zone; sliding, once no item came for
-- quiet_s, at most max_wait_s after the first. With max_items items it is due at once (at
-- its newest item). One expression, so the planner inlines it.
CREATE FUNCTION digest_due_at(
    win text, every_s float8, at time, quiet_s float8, max_wait_s float8, max_items integer,
    tz text, first_at timestamptz, last_at timestamptz, items bigint
) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT least(
        -- CASE WHEN, not CASE win WHEN: Citus sends the inlined form of the latter to
        -- its workers as a comparison of text with boolean. seconds_after(): see there.
        CASE
            WHEN win = 'fixed' THEN seconds_after(first_at, every_s)
            WHEN win = 'sliding' THEN least(seconds_after(last_at, quiet_s),
                                            seconds_after(first_at, max_wait_s))
            WHEN win = 'daily' THEN ((first_at AT TIME ZONE tz)::date
                                     + CASE WHEN (first_at AT TIME ZONE tz)::time < at
                                            THEN 0 ELSE 1 END
                                     + at) AT TIME ZONE tz
        END,
        -- least() skips NULLs: this counts only when the digest is full.
        CASE WHEN items >= max_items THEN last_at END)
$$;
