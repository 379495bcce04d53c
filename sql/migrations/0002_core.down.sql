-- Revision 0002 downgrade: drops the core schema.
DROP FUNCTION IF EXISTS wake_dispatchers(text[], text, text);
DROP VIEW IF EXISTS outbox_consumer_stats;
DROP TABLE IF EXISTS consumer_state;
DROP TABLE IF EXISTS delivery_attempts;
DROP TABLE IF EXISTS outbox;
DROP TABLE IF EXISTS seen_marks;
