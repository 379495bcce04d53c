-- Per-consumer delivery state at a glance, for ops dashboards and analysts.
CREATE VIEW outbox_consumer_stats AS
SELECT consumer,
       count(*) FILTER (WHERE status = 'pending')                                  AS pending,
       count(*) FILTER (WHERE status = 'pending' AND next_attempt_at <= now())     AS due,
       count(*) FILTER (WHERE status = 'pending' AND claimed_until > now())        AS in_flight,
       count(*) FILTER (WHERE status = 'delivered')                                AS delivered,
       count(*) FILTER (WHERE status = 'failed')                                   AS failed,
       count(*) FILTER (WHERE status = 'dead')                                     AS dead,
       min(created_at) FILTER (WHERE status = 'pending')                           AS oldest_pending_at
FROM outbox
GROUP BY consumer;
