-- Retention: the index the prune walks, on core's outbox (service/schedule/retention.py).

-- Delivered and suppressed rows, per consumer, for the prune: it finds each consumer's
-- oldest finished rows here without stepping over the rows it keeps. Through
-- outbox_updated_at_idx every batch would walk past all old pending rows (those of a
-- disabled consumer wait indefinitely), dead rows and inbox rows, which are kept longer
-- than the rows around them; inbox rows alone are one per notification for 90 days.
CREATE INDEX outbox_finished_idx ON outbox (consumer, updated_at)
    WHERE status IN ('delivered', 'suppressed');
