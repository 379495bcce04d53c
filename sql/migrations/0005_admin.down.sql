-- Revision 0005 downgrade: drops the admin panel's tables and goes back to 'dead' for
-- refused rows (in the reverse order of the up file).

DROP TABLE IF EXISTS mailings;
DROP TABLE IF EXISTS provider_controls;
DROP TABLE IF EXISTS consumer_controls;
DROP TABLE IF EXISTS audit_log;
DROP TABLE IF EXISTS admin_sessions;
DROP TABLE IF EXISTS admin_login_failures;
DROP TABLE IF EXISTS admin_users;

-- == mailings: a cancelled event ==
UPDATE events SET status = 'done', updated_at = now() WHERE status = 'cancelled';
ALTER TABLE events DROP CONSTRAINT events_status_check;
ALTER TABLE events ADD CONSTRAINT events_status_check
    CHECK (status IN ('scheduled', 'materializing', 'done'));

-- == ops: one vocabulary for row states ==
DROP VIEW outbox_consumer_stats;
CREATE VIEW outbox_consumer_stats AS
SELECT consumer,
       count(*) FILTER (WHERE status = 'pending')                                  AS pending,
       count(*) FILTER (WHERE status = 'pending' AND next_attempt_at <= now())     AS due,
       count(*) FILTER (WHERE status = 'pending' AND claimed_until > now())        AS in_flight,
       count(*) FILTER (WHERE status = 'delivered')                                AS delivered,
       count(*) FILTER (WHERE status = 'dead')                                     AS dead,
       min(created_at) FILTER (WHERE status = 'pending')                           AS oldest_pending_at
FROM outbox
GROUP BY consumer;
DROP INDEX outbox_dead_idx;
CREATE INDEX outbox_dead_idx ON outbox (consumer, updated_at) WHERE status = 'dead';
ALTER TABLE outbox DROP CONSTRAINT outbox_status_check;
UPDATE outbox SET status = 'dead', updated_at = now() WHERE status = 'failed';
ALTER TABLE outbox ADD CONSTRAINT outbox_status_check
    CHECK (status IN ('pending', 'delivered', 'dead', 'suppressed'));
