-- Revision 0007: the W3C traceparent stored with each outbox row (service/tracing.py), so
-- that a delivery attempt continues the trace of the request that wrote the row.
-- A nullable column without a default: adding it rewrites nothing.

ALTER TABLE outbox ADD COLUMN traceparent text;
