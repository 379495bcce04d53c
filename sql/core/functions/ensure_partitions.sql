-- The built-in partition maintainer: one partition per UTC day of `parent` for each day
-- from `from_day` to `to_day`, named <parent>_pYYYY_MM_DD (as pg_partman names them),
-- made only where missing. Rows of a day without a partition go to <parent>_default, so
-- a write is never refused; maintain_partitions() runs it a week ahead, so that partition
-- stays empty. Returns the partitions made.
-- lock_timeout: a new partition locks its parent briefly; waiting behind a long query
-- would queue the intake behind it, so the maintainer gives up and tries on its next run.
CREATE FUNCTION ensure_partitions(parent regclass, from_day date, to_day date)
RETURNS integer
LANGUAGE plpgsql SET lock_timeout = '200ms' AS $$
DECLARE
    day date;
    made integer := 0;
    part text;
BEGIN
    FOR day IN SELECT d::date FROM generate_series(from_day, to_day, interval '1 day') AS d LOOP
        part := format('%s_p%s', parent::text, to_char(day, 'YYYY_MM_DD'));
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
            part, parent, day::timestamp AT TIME ZONE 'UTC',
            (day + 1)::timestamp AT TIME ZONE 'UTC');
        made := made + 1;
    END LOOP;
    RETURN made;
END
$$;
