-- name: bench_counts
-- returns: one row (marks bigint, outbox bigint, jobs bigint, delivered bigint)
-- purpose: end-of-run accounting: every 200 "recorded" is exactly one mark and one outbox row.
SELECT (SELECT count(*) FROM seen_marks) AS marks,
       (SELECT count(*) FROM outbox) AS outbox,
       (SELECT count(*) FROM procrastinate_jobs) AS jobs,
       (SELECT count(*) FROM outbox WHERE status = 'delivered') AS delivered;

-- name: naive_insert_mark
-- returns: rows (outbox_id bigint): one row when the mark was new, none for a repeat
-- purpose: naive baseline, one statement per mark.
INSERT INTO seen_marks (tag, item_id, subject_key, subject_kind, subject, expires_at, outbox_id)
VALUES (%(tag)s, %(item_id)s, %(subject_key)s, %(subject_kind)s, %(subject)s::jsonb,
        now() + make_interval(secs => %(remember_for_s)s),
        nextval(pg_get_serial_sequence('outbox', 'id')))
ON CONFLICT DO NOTHING
RETURNING outbox_id;

-- name: naive_insert_outbox
-- returns: nothing
-- purpose: naive baseline, one outbox row per statement.
INSERT INTO outbox (id, kind, consumer, ordering_key, payload)
VALUES (%(outbox_id)s, 'seen', %(consumer)s, %(subject_key)s,
        jsonb_build_object('event_type', %(subject_kind)s::text, 'tag', %(tag)s::text,
                           'id', %(item_id)s::text, 'seen_at', now(),
                           'subject', %(subject)s::jsonb));

-- name: naive_defer_job
-- returns: one row (ids bigint[])
-- purpose: naive baseline, one Procrastinate job per mark via Procrastinate's own defer
--   function (what app.defer_async does), inside the request's transaction.
SELECT procrastinate_defer_jobs_v1(ARRAY[ROW(
    'dispatch', 'dispatcher.deliver_one', 0, NULL, NULL,
    jsonb_build_object('outbox_id', %(outbox_id)s::bigint), NULL
)::procrastinate_job_to_defer_v1]) AS ids;

-- name: drop_database
-- returns: nothing
-- purpose: drop a benchmark database ({name} is composed as an identifier).
DROP DATABASE IF EXISTS {name} WITH (FORCE);

-- name: create_database
-- returns: nothing
-- purpose: create a benchmark database ({name} is composed as an identifier).
CREATE DATABASE {name};

-- name: bench_clear_jobs
-- returns: nothing
-- purpose: drop the write path's wake-up jobs before a timed run, so they add no noise.
DELETE FROM procrastinate_jobs;

-- name: bench_pending_ids
-- returns: rows (id bigint)
-- purpose: the outbox rows one benchmark round filled (item ids start with its prefix).
SELECT id FROM outbox WHERE status = 'pending' AND payload->>'id' LIKE %(prefix)s ORDER BY id;

-- name: bench_delivered_between
-- returns: one row (delivered bigint)
-- purpose: progress of a timed run: delivered rows in the round's id range.
SELECT count(*) FROM outbox WHERE id BETWEEN %(lo)s AND %(hi)s AND status = 'delivered';
