-- name: prune_retention_batch
-- returns: rows (kind text, pruned bigint, full_batch boolean, reached timestamptz), one per
--   kind: 'delivered', 'dead' (dead letters: rows failed or dead), 'attempts',
--   'digest_items'; full_batch: the kind filled its batch; reached: how far it got, the
--   kind's `*_from` for the next batch (NULL: from the oldest).
-- purpose: one bounded batch of retention (the prune_retention_batch() function) in one
--   group of buckets (bucket_groups); run on an autocommit connection so that each batch
--   commits on its own, and again while any kind comes back full, group by group
--   (service/schedule/retention.py).
-- (NULL, not -infinity, which Python's datetime cannot hold.)
SELECT b.kind, b.pruned, b.full_batch, nullif(b.reached, '-infinity') AS reached
FROM prune_retention_batch(%(delivered)s::interval, %(inbox)s::interval, %(dead)s::interval,
                           %(attempts)s::interval, %(digest_items)s::interval,
                           %(batch_size)s::integer,
                           delivered_from =>
                               coalesce(%(delivered_from)s::timestamptz, '-infinity'),
                           dead_from =>
                               coalesce(%(dead_from)s::timestamptz, '-infinity'),
                           attempts_from =>
                               coalesce(%(attempts_from)s::timestamptz, '-infinity'),
                           digest_items_from =>
                               coalesce(%(digest_items_from)s::timestamptz, '-infinity'),
                           buckets => %(buckets)s::smallint[]) AS b;

-- name: call_prune_retention
-- returns: nothing (totals go to the server log)
-- purpose: the whole prune in the database, committing after each batch, as pg_cron runs
--   it; needs an autocommit connection (CALL must not be inside a transaction block).
CALL prune_retention(delivered => %(delivered)s::interval, inbox => %(inbox)s::interval,
                     dead => %(dead)s::interval, attempts => %(attempts)s::interval,
                     digest_items => %(digest_items)s::interval,
                     batch_size => %(batch_size)s::integer, pause => %(pause)s::interval,
                     inbox_changes => %(inbox_changes)s::interval);

-- name: prune_inbox_changes
-- returns: one row (pruned bigint)
-- purpose: one batch of the live inbox's change log past `inbox_changes`
--   (prune_inbox_changes()), on an autocommit connection: each batch commits alone.
SELECT prune_inbox_changes(%(inbox_changes)s::interval, %(batch_size)s::integer) AS pruned;

-- name: maintain_partitions
-- returns: one row (made integer): the day partitions made
-- purpose: make the day partitions of the coming week where missing (the
--   maintain_partitions() function), so rows never land in a default partition.
SELECT maintain_partitions() AS made;

-- name: drop_retained_partitions
-- returns: rows (day text): the day partition detached, if any (one per call)
-- purpose: retention by whole days (the drop_retained_partitions() function), a day per
--   call; run on an autocommit connection, each call followed by drop_detached_partitions,
--   again while a day comes back, before the row-by-row prune.
SELECT d AS day
FROM drop_retained_partitions(%(delivered)s::interval, %(inbox)s::interval,
                              %(dead)s::interval, %(attempts)s::interval) AS d;

-- name: drop_detached_partitions
-- returns: one row (dropped integer)
-- purpose: drop the days drop_retained_partitions detached, in a transaction of their own
--   (the drop_detached_partitions() function).
SELECT drop_detached_partitions() AS dropped;
