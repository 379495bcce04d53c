-- name: claim_outbox
-- returns: rows (id bigint, event_id text, ordering_key text, payload jsonb, attempts integer,
--   created_at timestamptz, traceparent text): the claimed rows; attempts is this attempt's
--   number, traceparent the W3C trace context of the request that wrote the row, if any.
-- purpose: claim up to `limit` due rows of one consumer in this dispatcher's buckets
--   (lease_buckets), oldest due first; none while an operator has paused the consumer.
--   SKIP LOCKED lets several dispatchers claim side by side; the lease pushes
--   next_attempt_at to the lease end, so the rows are due again only if this dispatcher
--   dies before completing them. The attempts counter is also the fencing token that
--   complete_outbox checks.
WITH due AS (
    SELECT id, bucket, created_at FROM outbox
    WHERE consumer = %(consumer)s AND status = 'pending' AND next_attempt_at <= now()
      AND bucket = ANY(%(buckets)s::smallint[])
      -- A paused consumer's rows stay pending (consumer_controls). Not correlated with
      -- the row: evaluated once per claim, one primary-key probe.
      AND NOT EXISTS (SELECT 1 FROM consumer_controls AS c
                      WHERE c.consumer = %(consumer)s AND c.paused)
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE outbox AS o
SET attempts = o.attempts + 1,
    next_attempt_at = now() + make_interval(secs => %(lease_s)s::float8),
    claimed_until = now() + make_interval(secs => %(lease_s)s::float8),
    claimed_by = %(dispatcher)s,
    updated_at = now()
FROM due
WHERE o.id = due.id AND o.bucket = due.bucket AND o.created_at = due.created_at
  -- The buckets again: on Citus the whole statement then goes to the one shard they share.
  AND o.bucket = ANY(%(buckets)s::smallint[])
RETURNING o.id, o.event_id::text, o.ordering_key, o.payload, o.attempts, o.created_at,
          o.traceparent;

-- name: claim_outbox_ordered
-- returns: rows (id bigint, event_id text, ordering_key text, payload jsonb, attempts integer,
--   created_at timestamptz, traceparent text), as claim_outbox.
-- purpose: claim_outbox for an ordered consumer: only the head (lowest pending id) of each
--   ordering key, and only while no other row of that key is leased, so one subject's rows
--   go one at a time in id order (the next waits until the previous is delivered, failed
--   or dead)
--   while different subjects go in parallel (only seen consumers are ordered: kind =
--   'seen' lets it use outbox_ordering_idx). The conditions on `o` sit in the locking
--   query so that a row another dispatcher claimed meanwhile is re-checked and skipped.
WITH due AS (
    SELECT o.id, o.bucket, o.created_at FROM outbox AS o
    WHERE o.consumer = %(consumer)s AND o.status = 'pending' AND o.next_attempt_at <= now()
      AND o.kind = 'seen' AND o.bucket = ANY(%(buckets)s::smallint[])
      -- A paused consumer's rows stay pending (consumer_controls). Not correlated with
      -- the row: evaluated once per claim, one primary-key probe.
      AND NOT EXISTS (SELECT 1 FROM consumer_controls AS c
                      WHERE c.consumer = %(consumer)s AND c.paused)
      AND NOT EXISTS (
          SELECT 1 FROM outbox AS p
          WHERE p.consumer = o.consumer AND p.bucket = o.bucket
            -- Named outright too, for Citus to route the statement to one shard.
            AND p.bucket = ANY(%(buckets)s::smallint[])
            AND p.ordering_key = o.ordering_key
            AND p.status = 'pending' AND p.kind = 'seen' AND p.id <> o.id
            AND (p.id < o.id OR p.claimed_until > now())
      )
    ORDER BY o.next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE OF o SKIP LOCKED
)
UPDATE outbox AS o
SET attempts = o.attempts + 1,
    next_attempt_at = now() + make_interval(secs => %(lease_s)s::float8),
    claimed_until = now() + make_interval(secs => %(lease_s)s::float8),
    claimed_by = %(dispatcher)s,
    updated_at = now()
FROM due
WHERE o.id = due.id AND o.bucket = due.bucket AND o.created_at = due.created_at
  -- The buckets again: on Citus the whole statement then goes to the one shard they share.
  AND o.bucket = ANY(%(buckets)s::smallint[])
RETURNING o.id, o.event_id::text, o.ordering_key, o.payload, o.attempts, o.created_at,
          o.traceparent;

-- name: claim_outbox_ids
-- returns: rows (id bigint, event_id text, ordering_key text, payload jsonb, attempts integer,
--   created_at timestamptz, traceparent text), as claim_outbox.
-- purpose: claim the given pending rows, whether due or not, except those of a paused
--   consumer; the baseline of bench/dispatch.py (one Procrastinate job per row) claims
--   its one row with it.
WITH picked AS (
    SELECT id FROM outbox
    WHERE id = ANY(%(ids)s::bigint[]) AND status = 'pending'
      AND NOT EXISTS (SELECT 1 FROM consumer_controls AS c
                      WHERE c.consumer = outbox.consumer AND c.paused)
    FOR UPDATE SKIP LOCKED
)
UPDATE outbox AS o
SET attempts = o.attempts + 1,
    next_attempt_at = now() + make_interval(secs => %(lease_s)s::float8),
    claimed_until = now() + make_interval(secs => %(lease_s)s::float8),
    claimed_by = %(dispatcher)s,
    updated_at = now()
FROM picked
WHERE o.id = picked.id
RETURNING o.id, o.event_id::text, o.ordering_key, o.payload, o.attempts, o.created_at,
          o.traceparent;

-- name: complete_outbox
-- returns: rows (id bigint, outcome text, applied boolean): the recorded outcome of each
--   attempt ('retry' turned 'dead' past max_attempts or max_age), and whether the row was
--   still this dispatcher's claim (false: the lease ran out and another took it over).
-- purpose: record a delivered batch in one statement: every attempt becomes a
--   delivery_attempts row, and each row still held by this claim becomes delivered, due
--   again after its backoff delay, failed (the consumer refused it: outcome 'failed') or
--   dead (retries or age ran out). Input arrays are parallel, one per attempt; `buckets`
--   are those the batch's claim named (on a Citus cluster: one shard's), NULL for any.
WITH input AS (
    -- now() once, here, and every CASE in the CTEs: Citus takes no stable function (nor
    -- timestamptz arithmetic) inside a CASE of an UPDATE.
    SELECT t.*, now() AS stamp
    FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(outcomes)s::text[],
                %(delays_s)s::float8[], %(status_codes)s::int[], %(errors)s::text[],
                %(started_at)s::timestamptz[], %(durations_ms)s::float8[],
                %(providers)s::text[])
         AS t(id, attempt, outcome, delay_s, status_code, error, started_at, duration_ms,
              provider)
),
decided AS (
    SELECT i.id, o.bucket, i.attempt, i.delay_s, i.status_code, left(i.error, 1000) AS error,
           i.started_at, i.duration_ms, i.provider, i.stamp,
           CASE WHEN i.outcome = 'retry'
                 AND (i.attempt - o.attempt_base >= %(max_attempts)s::int
                      OR coalesce(o.requeued_at, o.created_at)
                         + make_interval(secs => %(max_age_s)s::float8)
                         <= i.stamp + make_interval(secs => i.delay_s))
                THEN 'dead'
                ELSE i.outcome
           END AS outcome
    FROM input AS i
    JOIN outbox AS o
      ON o.id = i.id
     AND (%(buckets)s::smallint[] IS NULL OR o.bucket = ANY(%(buckets)s::smallint[]))
),
settled AS (
    SELECT d.*,
           CASE d.outcome WHEN 'delivered' THEN 'delivered'
                          WHEN 'retry' THEN 'pending'
                          WHEN 'failed' THEN 'failed'
                          ELSE 'dead' END AS status,
           CASE WHEN d.outcome = 'retry' THEN d.stamp + make_interval(secs => d.delay_s)
                ELSE d.stamp END AS next_attempt_at,
           CASE WHEN d.outcome = 'delivered' THEN d.stamp END AS delivered_at
    FROM decided AS d
),
changed AS (
    UPDATE outbox AS o
    SET status = d.status,
        next_attempt_at = d.next_attempt_at,
        claimed_until = NULL,
        last_error = CASE WHEN d.outcome = 'delivered' THEN NULL ELSE d.error END,
        delivered_at = d.delivered_at,
        updated_at = d.stamp
    FROM settled AS d
    WHERE o.id = d.id AND o.bucket = d.bucket
      AND (%(buckets)s::smallint[] IS NULL OR o.bucket = ANY(%(buckets)s::smallint[]))
      AND o.status = 'pending' AND o.attempts = d.attempt
      AND o.claimed_by = %(dispatcher)s
    RETURNING o.id
),
logged AS (
    INSERT INTO delivery_attempts
           (outbox_id, bucket, attempt, consumer, started_at, duration_ms, outcome,
            status_code, error, provider)
    SELECT id, bucket, attempt, %(consumer)s, started_at, duration_ms, outcome, status_code,
           error, provider
    FROM decided
    ORDER BY id
    ON CONFLICT (outbox_id, attempt, bucket, started_at) DO NOTHING
)
SELECT d.id, d.outcome, c.id IS NOT NULL AS applied
FROM decided AS d LEFT JOIN changed AS c ON c.id = d.id;

-- name: save_consumer_state
-- returns: nothing
-- purpose: publish a dispatcher's view of one consumer (breaker state, failure streak) to
--   consumer_state for ops; written on changes only, so it costs nothing per batch.
INSERT INTO consumer_state AS s
       (consumer, status, breaker, consecutive_failures, opened_at, waiting, last_error,
        dispatcher)
VALUES (%(consumer)s, %(status)s, %(breaker)s, %(failures)s, %(opened_at)s, NULL,
        left(%(last_error)s::text, 1000), %(dispatcher)s)
ON CONFLICT (consumer) DO UPDATE
    SET status = excluded.status, breaker = excluded.breaker,
        consecutive_failures = excluded.consecutive_failures, opened_at = excluded.opened_at,
        waiting = NULL, last_error = excluded.last_error, dispatcher = excluded.dispatcher,
        updated_at = now();

-- name: census_waiting
-- returns: rows (consumer text, status text, waiting bigint, oldest timestamptz): consumers
--   this dispatcher does not deliver to (disabled in its config, or not in it at all), with
--   how many pending rows wait for them and since when.
-- purpose: make waiting rows visible instead of silently parked: the result goes to the
--   log and into consumer_state (status 'disabled' / 'unknown', waiting = count).
WITH waiting AS (
    SELECT consumer, count(*) AS waiting, min(created_at) AS oldest
    FROM outbox
    WHERE status = 'pending' AND consumer <> ALL(%(active)s::text[])
    GROUP BY consumer
),
listed AS (
    SELECT c.consumer, coalesce(w.waiting, 0) AS waiting, w.oldest
    FROM unnest(%(disabled)s::text[]) AS c(consumer)
    LEFT JOIN waiting AS w ON w.consumer = c.consumer
    UNION ALL
    SELECT consumer, waiting, oldest FROM waiting
    WHERE consumer <> ALL(%(disabled)s::text[])
),
recorded AS (
    INSERT INTO consumer_state AS s (consumer, status, waiting, dispatcher)
    SELECT consumer,
           CASE WHEN consumer = ANY(%(disabled)s::text[]) THEN 'disabled' ELSE 'unknown' END,
           waiting, %(dispatcher)s
    FROM listed
    ON CONFLICT (consumer) DO UPDATE
        SET status = excluded.status, waiting = excluded.waiting,
            dispatcher = excluded.dispatcher, updated_at = now()
),
drained AS (
    UPDATE consumer_state
    SET waiting = 0, updated_at = now()
    WHERE status = 'unknown' AND waiting <> 0
      AND consumer <> ALL(ARRAY(SELECT consumer FROM listed))
)
SELECT consumer,
       CASE WHEN consumer = ANY(%(disabled)s::text[]) THEN 'disabled' ELSE 'unknown' END
           AS status,
       waiting, oldest
FROM listed
ORDER BY consumer;

-- name: claim_notifications
-- returns: rows (id bigint, event_id text, ordering_key text, payload jsonb, attempts integer,
--   created_at timestamptz, traceparent text), as claim_outbox; payload is what a channel transport needs:
--   notification_id, event_id, type, category, transactional, user_id, locale, data, the
--   contact of the channel's kind (email, phone, devices [{token, platform}], or
--   subscriptions [{endpoint, p256dh, auth}] for webpush), expires_at (when the type's ttl
--   ends; webpush's TTL header), and providers_off: the names of the channel's providers
--   an operator switched off (provider_controls; sms and push only, else empty).
-- purpose: claim_outbox for a notification channel (none while it is paused). Contacts
--   are read now, not at the fan-out, so a changed address is used and an erased one is
--   not; provider switches too, so transports need no database and a switch counts from
--   the next batch. Due rows that must
--   not be sent are suppressed instead of claimed, in the same statement: an escalation
--   whose notification was seen (a seen mark of the notification tag by its user), a
--   notification past its type's ttl, a recipient whose contact for this kind is gone.
WITH due AS (
    SELECT id, bucket, created_at FROM outbox
    WHERE consumer = %(consumer)s AND status = 'pending' AND next_attempt_at <= now()
      AND bucket = ANY(%(buckets)s::smallint[])
      -- A paused consumer's rows stay pending (consumer_controls). Not correlated with
      -- the row: evaluated once per claim, one primary-key probe.
      AND NOT EXISTS (SELECT 1 FROM consumer_controls AS c
                      WHERE c.consumer = %(consumer)s AND c.paused)
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
-- MATERIALIZED (as PostgreSQL does anyway for a CTE read three times): Citus works it
-- out apart, and refuses a STABLE function of a column inside an UPDATE.
facts AS MATERIALIZED (
    SELECT o.id, o.bucket, o.created_at, n.id AS notification_id, n.event_id, n.type,
           n.category, n.user_id,
           coalesce(c.transactional, false) AS transactional,
           -- A digest's own data (see flush_digests()), else the event's.
           coalesce(n.data, e.data) AS data, u.locale, u.email,
           u.phone, dev.devices, sub.subscriptions,
           e.send_at + make_interval(secs => t.ttl_s) AS expires_at,
           coalesce((o.payload ->> 'escalation')::boolean, false) AS escalation,
           CASE
               WHEN coalesce((o.payload ->> 'escalation')::boolean, false) AND EXISTS (
                        SELECT 1 FROM seen_marks AS m
                        WHERE m.tag = %(seen_tag)s AND m.item_id = n.id::text
                          AND m.subject_key = 'client:' || n.user_id
                          -- user_bucket(): the user's marks share the notification's shard.
                          AND m.bucket = n.bucket)
                   THEN 'seen'
               WHEN e.send_at + make_interval(secs => t.ttl_s) < now() THEN 'expired'
               WHEN u.id IS NULL
                    OR (%(kind)s = 'email' AND u.email IS NULL)
                    OR (%(kind)s = 'sms' AND u.phone IS NULL)
                    OR (%(kind)s = 'push' AND dev.devices IS NULL)
                    OR (%(kind)s = 'webpush' AND sub.subscriptions IS NULL)
                   THEN 'no_contact'
           END AS suppress
    FROM due
    JOIN outbox AS o
      ON o.id = due.id AND o.bucket = due.bucket AND o.created_at = due.created_at
    JOIN notifications AS n ON n.id = o.notification_id AND n.bucket = o.bucket
    JOIN events AS e ON e.id = n.event_id
    LEFT JOIN notify_event_types AS t ON t.name = n.type
    LEFT JOIN notify_categories AS c ON c.name = n.category
    LEFT JOIN users AS u ON u.id = n.user_id
    LEFT JOIN LATERAL (
        SELECT jsonb_agg(jsonb_build_object('token', d.token, 'platform', d.platform)
                         ORDER BY d.created_at) AS devices
        FROM push_devices AS d
        WHERE %(kind)s = 'push' AND d.user_id = n.user_id
    ) AS dev ON true
    LEFT JOIN LATERAL (
        SELECT jsonb_agg(jsonb_build_object('endpoint', w.endpoint, 'p256dh', w.p256dh,
                                            'auth', w.auth)
                         ORDER BY w.created_at) AS subscriptions
        FROM webpush_subscriptions AS w
        WHERE %(kind)s = 'webpush' AND w.user_id = n.user_id
    ) AS sub ON true
),
suppressed AS (
    UPDATE outbox AS o
    SET status = 'suppressed', reason = f.suppress, claimed_until = NULL, updated_at = now()
    FROM facts AS f
    WHERE o.id = f.id AND o.bucket = f.bucket AND o.created_at = f.created_at
      AND o.bucket = ANY(%(buckets)s::smallint[]) AND f.suppress IS NOT NULL
),
claimed AS (
    UPDATE outbox AS o
    SET attempts = o.attempts + 1,
        next_attempt_at = now() + make_interval(secs => %(lease_s)s::float8),
        claimed_until = now() + make_interval(secs => %(lease_s)s::float8),
        claimed_by = %(dispatcher)s,
        reason = NULL,
        updated_at = now()
    FROM facts AS f
    WHERE o.id = f.id AND o.bucket = f.bucket AND o.created_at = f.created_at
      AND o.bucket = ANY(%(buckets)s::smallint[]) AND f.suppress IS NULL
    RETURNING o.id, o.event_id::text AS row_event_id, o.ordering_key, o.attempts, o.created_at,
              o.traceparent
)
SELECT c.id, c.row_event_id, c.ordering_key,
       jsonb_build_object(
           'notification_id', f.notification_id, 'event_id', f.event_id, 'type', f.type,
           'category', f.category, 'transactional', f.transactional, 'user_id', f.user_id,
           'locale', f.locale, 'data', f.data, 'escalation', f.escalation,
           'email', CASE WHEN %(kind)s = 'email' THEN f.email END,
           'phone', CASE WHEN %(kind)s = 'sms' THEN f.phone END,
           'devices', f.devices,
           'subscriptions', f.subscriptions, 'expires_at', f.expires_at,
           'providers_off', (SELECT coalesce(jsonb_agg(p.provider ORDER BY p.provider), '[]')
                             FROM provider_controls AS p
                             WHERE %(kind)s IN ('sms', 'push')
                               AND p.channel = %(consumer)s AND NOT p.enabled)) AS payload,
       c.attempts, c.created_at, c.traceparent
FROM claimed AS c JOIN facts AS f ON f.id = c.id;

-- name: remove_push_devices
-- returns: one row (removed bigint)
-- purpose: forget push tokens a provider called invalid (404/410), so no later
--   notification is sent to them. Input arrays are parallel (user id, token).
WITH gone AS (
    DELETE FROM push_devices AS d
    USING unnest(%(user_ids)s::text[], %(tokens)s::text[]) AS x(user_id, token)
    WHERE d.user_id = x.user_id AND d.token = x.token
    RETURNING 1
)
SELECT count(*) AS removed FROM gone;

-- name: remove_webpush_subscriptions
-- returns: one row (removed bigint)
-- purpose: forget Web Push subscriptions whose push service answered 404 or 410 (expired
--   or unsubscribed), so no later notification is sent to them. Input arrays are parallel
--   (user id, endpoint): an endpoint registered anew by another user meanwhile stays.
WITH gone AS (
    DELETE FROM webpush_subscriptions AS w
    USING unnest(%(user_ids)s::text[], %(endpoints)s::text[]) AS x(user_id, endpoint)
    WHERE w.endpoint = x.endpoint AND w.user_id = x.user_id
    RETURNING 1
)
SELECT count(*) AS removed FROM gone;

-- name: lease_buckets
-- returns: rows (consumer text, buckets smallint[]): the buckets of each consumer this
--   dispatcher now holds.
-- purpose: renew and rebalance this dispatcher's bucket leases (the lease_buckets()
--   function); a claim reads only the rows of the buckets held.
SELECT l.consumer, l.buckets
FROM lease_buckets(%(dispatcher)s, %(consumers)s::text[], %(lease_s)s::float8) AS l;

-- name: release_buckets
-- returns: nothing
-- purpose: give back every bucket this dispatcher holds, on a clean stop.
SELECT release_buckets(%(dispatcher)s);

-- name: bucket_groups
-- returns: rows (buckets smallint[]): the buckets grouped by shard, one group on one server
-- purpose: which buckets one claim may name together (the bucket_groups() function).
SELECT g AS buckets FROM bucket_groups() AS g;

-- name: due_buckets
-- returns: rows (bucket smallint): those of `buckets` that hold rows of `consumer` due now
-- purpose: on a Citus cluster, which groups of buckets a consumer's claims should visit
--   once a claim came back empty: one read across the shards, grouped on each shard (no
--   row locks), instead of a claim sent to every shard in turn. Not needed on one server
--   (one group).
SELECT bucket FROM outbox
WHERE consumer = %(consumer)s AND status = 'pending' AND next_attempt_at <= now()
  AND bucket = ANY(%(buckets)s::smallint[])
GROUP BY bucket;
