-- The outbox rows of notifications just made, shared by the instant fan-out
-- (notify_materialize_chunk()) and the digests' (flush_digests()) so that both queue by
-- the same rules: one row per route of the notification's type (notify_type_routes())
-- that its `suppressed` does not name, owed at `due` plus the route's delay and held by
-- the recipient's quiet hours (notify_quiet_hours(), notify_send_at()). The notifications
-- are those of `events` with user ids after `after` up to `upto` (NULL: no bound); `guard`
-- skips any that has rows already (only a repeat can). `rows` bounds how many there are,
-- to take the ids' blocks (block_id()). One statement that Citus runs on every shard at
-- once, rows named by their ids (uuid_v7_of(): uuid_v7() is volatile). Wakes the
-- dispatchers of the routes' channels; returns the rows queued.
CREATE FUNCTION notify_queue(
    events uuid[], after text, upto text, due timestamptz, guard boolean, types text[],
    rows bigint
) RETURNS bigint
-- Its callers have turned commutative_writes() on.
LANGUAGE plpgsql AS $$
DECLARE
    r_types text[];
    channels text[];
    escalations boolean[];
    delays float8[];
    transactional boolean[];
    priorities text[];
    queued bigint;
BEGIN
    SELECT array_agg(t.name), array_agg(r.channel), array_agg(r.escalation),
           array_agg(r.delay_s), array_agg(c.transactional), array_agg(t.priority)
    INTO r_types, channels, escalations, delays, transactional, priorities
    FROM notify_event_types AS t
    JOIN notify_categories AS c ON c.name = t.category
    CROSS JOIN LATERAL notify_type_routes(t.name) AS r
    WHERE t.name = ANY(types);
    IF r_types IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE $q$
        INSERT INTO outbox (id, bucket, event_id, kind, consumer, ordering_key, payload,
                            next_attempt_at, notification_id, reason)
        SELECT d.row_id, d.bucket, uuid_v7_of(now(), d.row_id), 'notification', d.channel,
               d.user_id,
               CASE WHEN d.escalation THEN '{"escalation": true}'::jsonb ELSE '{}'::jsonb END,
               d.until, d.id, CASE WHEN d.until > d.owed_at THEN 'quiet_hours' END
        FROM (
            SELECT block_id($1, row_number() OVER (PARTITION BY n.bucket
                                                   ORDER BY n.id, r.channel, r.escalation)
                                - 1, n.bucket) AS row_id,
                   n.bucket, n.id, n.user_id, r.channel, r.escalation,
                   $5 + make_interval(secs => r.delay_s) AS owed_at,
                   notify_send_at($5 + make_interval(secs => r.delay_s),
                                  coalesce(u.timezone, 'UTC'),
                                  notify_quiet_hours(r.transactional, r.priority, p.quiet_hours,
                                                     r.channel)) AS until
            FROM notifications AS n
            JOIN unnest($7::text[], $8::text[], $9::boolean[], $10::float8[], $11::boolean[],
                        $12::text[])
                AS r (type, channel, escalation, delay_s, transactional, priority)
                ON r.type = n.type
            LEFT JOIN users AS u ON u.id = n.user_id
            LEFT JOIN preferences AS p ON p.user_id = n.user_id
            WHERE n.event_id = ANY($2) AND n.user_id > $3
              AND ($4::text IS NULL OR n.user_id <= $4)
              AND NOT coalesce(n.suppressed ? r.channel, false)
              AND NOT ($6 AND EXISTS (SELECT 1 FROM outbox AS o
                                      WHERE o.notification_id = n.id AND o.bucket = n.bucket))
        ) AS d
        $q$
    USING take_blocks(pg_get_serial_sequence('outbox', 'id')::regclass,
                      rows * (SELECT max(x.n) FROM (SELECT count(*) AS n FROM unnest(r_types) AS t
                                                    GROUP BY t) AS x)),
          events, after, upto, due, guard, r_types, channels, escalations, delays,
          transactional, priorities;
    GET DIAGNOSTICS queued = ROW_COUNT;
    -- Every channel of the routes: the rows just written are on the workers, and a
    -- dispatcher woken for a channel with nothing due claims nothing.
    IF queued > 0 THEN
        PERFORM wake_dispatchers(ARRAY(SELECT DISTINCT unnest(channels)),
                                 'dispatch', 'dispatcher.wake');
    END IF;
    RETURN queued;
END
$$;
