-- Analytics: stable views for analysts.
-- Their names and columns are a contract with analysts' saved queries and dashboards
-- (docs/analytics.md documents them, tests/integration/test_analytics.py pins them): add
-- a column at the end or a new view rather than change what one means. Time buckets are
-- UTC whatever the session's TimeZone, so two analysts in different zones get the same
-- rows. The views read the base tables (nothing is materialized, so nothing goes stale)
-- and see only what retention keeps. Bucket columns are plain expressions of one table's
-- column, so an outer filter on them is pushed down into that table's scan.

-- Delivery attempts per consumer (a seen consumer or a notification channel) and UTC hour
-- of the attempt's start. An attempt that ends its row is delivered, failed or dead; a
-- retry ends nothing. success_rate = delivered / ended, so a row that needed retries
-- still counts once as a success, and `ended` is there to re-aggregate the rate over
-- several hours (sum(delivered) / sum(ended)); percentiles cannot be re-aggregated.
CREATE VIEW analytics_deliveries_hourly AS
SELECT date_trunc('hour', a.started_at, 'UTC') AS hour,
       a.consumer,
       count(*) AS attempts,
       count(*) FILTER (WHERE a.outcome = 'delivered') AS delivered,
       count(*) FILTER (WHERE a.outcome = 'retry') AS retried,
       count(*) FILTER (WHERE a.outcome = 'failed') AS failed,
       count(*) FILTER (WHERE a.outcome = 'dead') AS dead,
       count(*) FILTER (WHERE a.outcome <> 'retry') AS ended,
       (count(*) FILTER (WHERE a.outcome = 'delivered'))::float8
           / nullif(count(*) FILTER (WHERE a.outcome <> 'retry'), 0) AS success_rate,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY a.duration_ms) AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY a.duration_ms) AS p95_ms
FROM delivery_attempts AS a
GROUP BY date_trunc('hour', a.started_at, 'UTC'), a.consumer;

-- Seen marks per tag and UTC day of arrival. A repeat inside remember_for changes no
-- mark, so every mark is a new one; a mark revived after it expired counts on the day of
-- its revival. Marks are purged after their tag's remember_for, so older days thin out.
CREATE VIEW analytics_seen_daily AS
SELECT (m.seen_at AT TIME ZONE 'UTC')::date AS day,
       m.tag,
       count(*) AS new_marks,
       count(DISTINCT m.subject_key) AS subjects,
       count(DISTINCT m.item_id) AS items
FROM seen_marks AS m
GROUP BY (m.seen_at AT TIME ZONE 'UTC')::date, m.tag;

-- Seconds from a seen mark's arrival to its delivery, per consumer and UTC hour of
-- delivery. Arrival is the outbox row's created_at: the write path stamps it and the
-- mark's seen_at with the same now(), and the row outlives the mark's purge and a
-- revival of the mark (which gets a row of its own). A row bin/redeliver requeued counts
-- from its first arrival to its last delivery; `requeued` says how many did.
CREATE VIEW analytics_seen_to_delivered AS
SELECT date_trunc('hour', o.delivered_at, 'UTC') AS hour,
       o.consumer,
       count(*) AS delivered,
       percentile_cont(0.5) WITHIN GROUP (
           ORDER BY extract(epoch FROM o.delivered_at - o.created_at)::float8) AS p50_seconds,
       percentile_cont(0.95) WITHIN GROUP (
           ORDER BY extract(epoch FROM o.delivered_at - o.created_at)::float8) AS p95_seconds,
       max(extract(epoch FROM o.delivered_at - o.created_at)::float8) AS max_seconds,
       count(*) FILTER (WHERE o.requeued_at IS NOT NULL) AS requeued
FROM outbox AS o
WHERE o.kind = 'seen' AND o.status = 'delivered'
GROUP BY date_trunc('hour', o.delivered_at, 'UTC'), o.consumer;

-- The notification half's decisions, one row per notification and channel: an outbox row
-- (queued; its status says how it went) or an entry of the notification's `suppressed`
-- (never queued: muted, preference, no_contact). seen: the row was delivered and the
-- notification's user marked it seen, as GET /v1/events/{id} counts it. The seen tag is
-- [notify].seen_tag, which SQL cannot read from the config file: the setting
-- mark_notify.seen_tag (ALTER DATABASE ... SET) overrides the default 'notifications'.
-- Unlike the status endpoint this counts marks past remember_for that are not purged
-- yet: an analyst asks whether the user saw it, not whether the service still remembers.
CREATE VIEW analytics_notification_decisions AS
SELECT n.id AS notification_id, n.type AS event_type, n.created_at, o.consumer AS channel,
       o.status, o.reason, true AS queued,
       o.status = 'delivered' AND EXISTS (
           SELECT 1 FROM seen_marks AS m
           WHERE m.tag = coalesce(nullif(current_setting('mark_notify.seen_tag', true), ''),
                                  'notifications')
             AND m.item_id = n.id::text AND m.subject_key = 'client:' || n.user_id
             AND m.bucket = n.bucket
       ) AS seen
FROM notifications AS n
JOIN outbox AS o ON o.notification_id = n.id AND o.bucket = n.bucket
UNION ALL
SELECT n.id, n.type, n.created_at, s.key, 'suppressed', s.value, false, false
FROM notifications AS n
CROSS JOIN LATERAL jsonb_each_text(n.suppressed) AS s
WHERE n.suppressed IS NOT NULL;

-- The funnel per UTC day of the notification, event type and channel: queued = pending +
-- sent + failed + dead + suppressed (every outbox row made); not_queued never got a row.
-- sent_rate = sent / queued, seen_rate = seen / sent. A notification sent on two channels
-- and seen once is seen on both: a mark says the user saw it, not through which channel.
CREATE VIEW analytics_notification_funnel AS
SELECT (d.created_at AT TIME ZONE 'UTC')::date AS day,
       d.event_type,
       d.channel,
       count(*) FILTER (WHERE d.queued) AS queued,
       count(*) FILTER (WHERE d.status = 'pending') AS pending,
       count(*) FILTER (WHERE d.status = 'delivered') AS sent,
       count(*) FILTER (WHERE d.status = 'failed') AS failed,
       count(*) FILTER (WHERE d.status = 'dead') AS dead,
       count(*) FILTER (WHERE d.queued AND d.status = 'suppressed') AS suppressed,
       count(*) FILTER (WHERE NOT d.queued) AS not_queued,
       count(*) FILTER (WHERE d.seen) AS seen,
       (count(*) FILTER (WHERE d.status = 'delivered'))::float8
           / nullif(count(*) FILTER (WHERE d.queued), 0) AS sent_rate,
       (count(*) FILTER (WHERE d.seen))::float8
           / nullif(count(*) FILTER (WHERE d.status = 'delivered'), 0) AS seen_rate
FROM analytics_notification_decisions AS d
GROUP BY (d.created_at AT TIME ZONE 'UTC')::date, d.event_type, d.channel;

-- Why deliveries were not sent, per UTC day of the notification, event type, channel and
-- reason: never queued (queued false: muted, preference, no_contact) or queued and then
-- dropped (queued true: seen before an escalation was due, expired, no_contact, erased).
CREATE VIEW analytics_notification_suppressions AS
SELECT (d.created_at AT TIME ZONE 'UTC')::date AS day,
       d.event_type,
       d.channel,
       d.queued,
       coalesce(d.reason, 'unknown') AS reason,
       count(*) AS notifications
FROM analytics_notification_decisions AS d
WHERE d.status = 'suppressed'
GROUP BY (d.created_at AT TIME ZONE 'UTC')::date, d.event_type, d.channel, d.queued,
         coalesce(d.reason, 'unknown');

-- Users' own switches per category and channel (the configured pairs, and any pair a
-- user switched): preferences.channels = {category: {channel: bool}}, a pair left out
-- (or null) follows the category's default. opt_out_rate = switched_off /
-- users_with_preferences. muted is the global mute, the same on every row; silenced =
-- the users whose own choice keeps this category off this channel (muted or switched
-- off), as the fan-out decides it: none for a transactional category, which ignores both.
CREATE VIEW analytics_preference_optouts AS
WITH switches AS (
    SELECT c.key AS category, s.key AS channel, p.user_id, p.muted, s.value::boolean AS is_on
    FROM preferences AS p
    -- The fan-out reads a malformed entry as no switch; so does this, rather than fail.
    CROSS JOIN LATERAL jsonb_each(
        CASE WHEN jsonb_typeof(p.channels) = 'object' THEN p.channels ELSE '{}' END) AS c
    CROSS JOIN LATERAL jsonb_each_text(
        CASE WHEN jsonb_typeof(c.value) = 'object' THEN c.value ELSE '{}' END) AS s
    WHERE s.value IS NOT NULL
),
pairs AS (
    SELECT cat.name AS category, ch.name AS channel
    FROM notify_categories AS cat CROSS JOIN notify_channels AS ch
    WHERE cat.enabled AND ch.enabled
    UNION
    SELECT category, channel FROM switches
),
totals AS (
    SELECT count(*) AS users_with_preferences, count(*) FILTER (WHERE muted) AS muted
    FROM preferences
)
SELECT pr.category,
       pr.channel,
       cat.transactional,
       CASE WHEN cat.name IS NOT NULL
            THEN coalesce((cat.defaults ->> pr.channel)::boolean, true) END AS default_on,
       t.users_with_preferences,
       count(s.user_id) FILTER (WHERE s.is_on) AS switched_on,
       count(s.user_id) FILTER (WHERE NOT s.is_on) AS switched_off,
       (count(s.user_id) FILTER (WHERE NOT s.is_on))::float8
           / nullif(t.users_with_preferences, 0) AS opt_out_rate,
       t.muted,
       CASE WHEN coalesce(cat.transactional, false) THEN 0
            ELSE t.muted + count(s.user_id) FILTER (WHERE NOT s.is_on AND NOT s.muted)
       END AS silenced
FROM pairs AS pr
CROSS JOIN totals AS t
LEFT JOIN notify_categories AS cat ON cat.name = pr.category
LEFT JOIN switches AS s ON s.category = pr.category AND s.channel = pr.channel
GROUP BY pr.category, pr.channel, cat.name, cat.transactional, cat.defaults,
         t.users_with_preferences, t.muted;
