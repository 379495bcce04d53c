-- Revision 0007 downgrade: drops the outbox rows' traceparent.

ALTER TABLE outbox DROP COLUMN IF EXISTS traceparent;
