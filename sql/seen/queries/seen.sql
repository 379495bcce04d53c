-- name: record_seen_marks
-- returns: rows (tag text, item_id text, subject_key text): the marks that were new, or
--   that had expired and were revived; every other input position was a repeat.
-- purpose: the whole seen write path as one set-based statement, so a request, a batch or
--   a group-committed set of requests costs one round trip: upsert the marks, add one
--   outbox row per new mark of a tag with a consumer (with the request's W3C traceparent), and defer one dispatcher wake-up per consumer that got rows.
--   The wake-up is a Procrastinate job with a queueing lock per consumer, so a burst adds
--   at most one pending job per consumer. The input is one JSON array of mark objects
--   (one parameter that Python encodes and PostgreSQL unpacks in C, where parallel arrays
--   cost the API more CPU to bind than the statement took to run); repeated keys are
--   folded; rows are written in key order so concurrent batches cannot deadlock.
WITH input AS (
    SELECT DISTINCT ON (tag, item_id, subject_key)
           tag, item_id, subject_key, subject_kind, subject, consumer, remember_for_s,
           traceparent
    FROM jsonb_to_recordset(%(marks)s::jsonb)
         AS t(tag text, item_id text, subject_key text, subject_kind text, subject jsonb,
              consumer text, remember_for_s float8, traceparent text)
    ORDER BY tag, item_id, subject_key
),
marks AS (
    INSERT INTO seen_marks AS m
           (tag, item_id, subject_key, bucket, subject_kind, subject, seen_at, expires_at,
            outbox_id)
    SELECT tag, item_id, subject_key, subject_bucket(subject_key), subject_kind, subject,
           now(), now() + make_interval(secs => remember_for_s),
           CASE WHEN consumer IS NOT NULL THEN nextval(pg_get_serial_sequence('outbox', 'id')) END
    FROM input
    ORDER BY tag, item_id, subject_key
    -- excluded.seen_at is now(): Citus takes no function but an immutable one here.
    ON CONFLICT (tag, item_id, subject_key, bucket) DO UPDATE
        SET subject = excluded.subject, seen_at = excluded.seen_at,
            expires_at = excluded.expires_at, outbox_id = excluded.outbox_id,
            updated_at = excluded.seen_at
        WHERE m.expires_at <= excluded.seen_at
    RETURNING tag, item_id, subject_key, bucket, subject_kind, subject, seen_at, outbox_id
),
queued AS (
    INSERT INTO outbox (id, bucket, kind, consumer, ordering_key, payload, traceparent)
    SELECT mk.outbox_id, mk.bucket, 'seen', i.consumer, mk.subject_key,
           jsonb_build_object('event_type', mk.subject_kind, 'tag', mk.tag, 'id', mk.item_id,
                              'seen_at', mk.seen_at, 'subject', mk.subject),
           i.traceparent
    FROM marks AS mk JOIN input AS i USING (tag, item_id, subject_key)
    WHERE mk.outbox_id IS NOT NULL
    ORDER BY mk.outbox_id
    RETURNING consumer
),
woken AS (
    SELECT wake_dispatchers(array_agg(consumer), %(wake_queue)s::text, %(wake_task)s::text)
    FROM queued
    HAVING count(*) > 0
)
-- woken is a plain SELECT, and a CTE runs only if read: the join reads it.
SELECT tag, item_id, subject_key FROM marks LEFT JOIN woken ON true;

-- name: purge_expired_seen_marks
-- returns: one row (purged bigint)
-- purpose: forget marks past their remember_for, in bounded chunks so a large backlog
--   never holds a long lock; run on a schedule (pg_cron or a Procrastinate periodic task).
--   No FOR UPDATE (Citus locks rows only within one shard): the delete checks the expiry
--   again on the row as it is then, so a mark revived meanwhile stays, and two purges at
--   once delete each mark once.
WITH doomed AS (
    SELECT tag, item_id, subject_key, bucket FROM seen_marks
    WHERE expires_at <= now()
    ORDER BY expires_at
    LIMIT %(limit)s
), gone AS (
    DELETE FROM seen_marks AS m USING doomed AS d
    WHERE (m.tag, m.item_id, m.subject_key, m.bucket)
          = (d.tag, d.item_id, d.subject_key, d.bucket)
      AND m.expires_at <= now()
    RETURNING 1
)
SELECT count(*) AS purged FROM gone;

