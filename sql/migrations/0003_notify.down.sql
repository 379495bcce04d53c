-- Revision 0003 downgrade: drops the notification half and restores the core as 0002 left it.
DROP FUNCTION IF EXISTS erase_user(text);
DROP FUNCTION IF EXISTS notify_event(text, text, text, jsonb, jsonb, timestamptz, integer);
DROP FUNCTION IF EXISTS notify_materialize(uuid, integer);
DROP FUNCTION IF EXISTS notify_finish(uuid);
DROP FUNCTION IF EXISTS notify_materialize_chunk(uuid, text, text);
DROP FUNCTION IF EXISTS notify_claim_chunk(uuid, integer);
DROP FUNCTION IF EXISTS notify_audience_bound(jsonb, text, integer);
DROP FUNCTION IF EXISTS notify_audience(jsonb, text, text);
DROP TABLE IF EXISTS event_chunks;
DROP FUNCTION IF EXISTS sync_notify_config(jsonb, jsonb, jsonb);
DROP FUNCTION IF EXISTS quiet_hours_end(timestamptz, text, jsonb);
DROP TABLE IF EXISTS notifications;
DROP TABLE IF EXISTS events;
DROP TABLE IF EXISTS preferences;
DROP TABLE IF EXISTS user_topics;
DROP TABLE IF EXISTS push_devices;
DROP TABLE IF EXISTS users;
DROP TABLE IF EXISTS notify_event_types;
DROP TABLE IF EXISTS notify_categories;
DROP TABLE IF EXISTS notify_channels;
DROP TABLE IF EXISTS api_keys;
ALTER TABLE delivery_attempts DROP COLUMN provider;
DROP INDEX outbox_ordering_idx;
CREATE INDEX outbox_ordering_idx ON outbox (consumer, ordering_key, id) WHERE status = 'pending';
ALTER TABLE outbox ALTER COLUMN event_id SET DEFAULT gen_random_uuid();
DROP FUNCTION uuid_v7();
-- Notification rows cannot exist under 0002's schema.
DELETE FROM outbox WHERE kind = 'notification';
DROP INDEX IF EXISTS outbox_notification_idx;
ALTER TABLE outbox DROP CONSTRAINT outbox_status_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_status_check
    CHECK (status IN ('pending', 'delivered', 'dead'));
ALTER TABLE outbox DROP COLUMN reason;
ALTER TABLE outbox DROP COLUMN notification_id;
DELETE FROM seen_marks WHERE outbox_id IS NULL;
ALTER TABLE seen_marks ALTER COLUMN outbox_id SET NOT NULL;
