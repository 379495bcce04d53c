-- The fan-out of one claimed chunk: its recipients as notifications and outbox rows, in
-- set-based statements that on Citus run on every shard at once (each over its own
-- buckets, joined to its copy of the users: notify_audience_sql()), with ids from blocks
-- taken up front (block_id()): a sequence called per row would pull every row through
-- the coordinator. Per recipient and channel it applies, in this order: the global mute
-- and the category switches (not for transactional categories), a missing contact
-- (suppressed, kept on the notification), quiet hours (the row is due when they end; not
-- for transactional categories or high priority), and the escalation delay: the routes
-- and rules flush_digests() applies too (notify_type_routes(), notify_suppression(),
-- notify_quiet_hours(), notify_send_at()). A digest-mode type's recipients get a digest
-- item instead, under the event's data[digest_key], for flush_digests() to send. The
-- chunk's row is locked while it runs, so a chunk is done once; UNIQUE (event_id, user_id,
-- bucket) makes a repeat a no-op. Returns the recipients covered (0: already done by
-- another worker, or the event was cancelled: the chunk is closed with nobody covered).
CREATE FUNCTION notify_materialize_chunk(p_event uuid, p_lo text, p_hi text) RETURNS integer
-- The chunk's sorts and aggregates fit in memory instead of spilling to disk.
LANGUAGE plpgsql SET work_mem = '64MB' AS $$
DECLARE
    ev events%ROWTYPE;
    et notify_event_types%ROWTYPE;
    cat notify_categories%ROWTYPE;
    chunk_covered integer;
    audience text;
    topic text;
    ids text[];
    channels text[];
    kinds text[];
    notified bigint;
    due timestamptz;
    commutative text;
BEGIN
    PERFORM 1 FROM event_chunks AS c
    WHERE c.event_id = p_event AND c.lo = p_lo AND c.covered IS NULL
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- FOR KEY SHARE: chunks side by side do not block one another, but cancel_event()
    -- (FOR UPDATE) waits for this chunk's rows to be committed before it suppresses the
    -- pending ones, and a chunk that starts after a cancel sees it.
    SELECT * INTO STRICT ev FROM events AS e WHERE e.id = p_event FOR KEY SHARE;
    IF ev.status = 'cancelled' THEN
        UPDATE event_chunks AS c SET covered = 0, updated_at = now()
        WHERE c.event_id = p_event AND c.lo = p_lo;
        RETURN 0;
    END IF;
    SELECT * INTO STRICT et FROM notify_event_types AS t WHERE t.name = ev.type;
    SELECT * INTO STRICT cat FROM notify_categories AS c WHERE c.name = et.category;
    due := greatest(ev.send_at, now());

    commutative := commutative_writes('on');
    topic := ev.recipients ->> 'topic';
    ids := ARRAY(SELECT jsonb_array_elements_text(ev.recipients -> 'user_ids'));
    audience := notify_audience_sql(ev.recipients, true);
    -- Sizes the blocks of ids. $1-$4 are notify_audience_sql()'s parameters throughout.
    EXECUTE 'SELECT count(*) FROM ' || audience INTO chunk_covered
    USING topic, ids, p_lo, p_hi;

    IF et.mode = 'digest' THEN
        -- notify_event() checked that the key is there; a JSON null cannot group.
        IF ev.data ->> et.digest_key IS NULL THEN
            RAISE EXCEPTION 'event data lacks %', et.digest_key
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        EXECUTE format($q$
            INSERT INTO digest_items (id, bucket, event_id, user_id, type, digest_key, actor,
                                      data)
            OVERRIDING SYSTEM VALUE
            SELECT block_id($5, row_number() OVER (PARTITION BY b.bucket ORDER BY u.id) - 1,
                            b.bucket),
                   b.bucket, $6, u.id, $7, $8, $9, $10
            FROM %s
            ON CONFLICT (event_id, user_id, bucket) WHERE notification_id IS NULL DO NOTHING
            $q$, audience)
        USING topic, ids, p_lo, p_hi,
              take_blocks(pg_get_serial_sequence('digest_items', 'id')::regclass, chunk_covered),
              ev.id, ev.type, ev.data ->> et.digest_key, ev.data ->> et.digest_actor, ev.data;
    ELSE
        SELECT array_agg(r.channel), array_agg(r.kind) INTO channels, kinds
        FROM notify_type_routes(et.name) AS r;
        -- One notification per recipient, with the channels suppressed for them.
        EXECUTE format($q$
            INSERT INTO notifications (id, bucket, event_id, user_id, type, category,
                                       suppressed)
            OVERRIDING SYSTEM VALUE
            SELECT block_id($5, row_number() OVER (PARTITION BY d.bucket ORDER BY d.id) - 1,
                            d.bucket),
                   d.bucket, $6, d.id, $7, $8,
                   jsonb_object_agg(d.channel, d.verdict) FILTER (WHERE d.verdict IS NOT NULL)
            FROM (
                SELECT a.bucket, a.id, r.channel,
                       notify_suppression($9, p.muted, p.channels, $10, $8, r.channel, r.kind,
                                          a.email, a.phone,
                                          -- Not `CASE r.kind WHEN`: Citus sent that to the workers as text = boolean.
                                          CASE
                                              WHEN r.kind = 'push' THEN EXISTS (
                                                  SELECT 1 FROM push_devices AS pd
                                                  WHERE pd.user_id = a.id)
                                              WHEN r.kind = 'webpush' THEN EXISTS (
                                                  SELECT 1 FROM webpush_subscriptions AS ws
                                                  WHERE ws.user_id = a.id)
                                          END) AS verdict
                FROM (SELECT b.bucket, u.id, u.email, u.phone FROM %s) AS a
                LEFT JOIN preferences AS p ON p.user_id = a.id
                CROSS JOIN unnest($11::text[], $12::text[]) AS r (channel, kind)
            ) AS d
            GROUP BY d.bucket, d.id
            ON CONFLICT (event_id, user_id, bucket) DO NOTHING
            $q$, audience)
        USING topic, ids, p_lo, p_hi,
              take_blocks(pg_get_serial_sequence('notifications', 'id')::regclass,
                          chunk_covered),
              ev.id, ev.type, et.category, cat.transactional, cat.defaults, channels, kinds;
        GET DIAGNOSTICS notified = ROW_COUNT;

        -- Their outbox rows. A notification that existed before (a repeat, which no
        -- chunk makes: the ranges are disjoint) may have its rows already; only then is
        -- each checked for them.
        PERFORM notify_queue(ARRAY[ev.id], p_lo, p_hi, due, notified < chunk_covered,
                             ARRAY[et.name], chunk_covered);
    END IF;

    PERFORM commutative_writes(commutative);
    UPDATE event_chunks AS c SET covered = chunk_covered, updated_at = now()
    WHERE c.event_id = p_event AND c.lo = p_lo;
    -- Last, so the event row is locked only for the end of this transaction.
    UPDATE events AS e SET notified = e.notified + chunk_covered,
                           updated_at = now()
    WHERE e.id = p_event;
    RETURN chunk_covered;
END
$$;
