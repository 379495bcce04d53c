-- Digests: items of digest-mode event types, sent together (service/schedule/digests.py).

-- Items of digest-mode event types, one per event and recipient, gathered under a digest
-- key (e.g. the comment id) until flush_digests() turns the due ones into one
-- notification per recipient and key. notification_id is NULL while the item is open.
-- (event_id, user_id) is unique among open items, which is what makes a repeated fan-out
-- chunk a no-op (a chunk is materialized once anyway, see notify_materialize_chunk()); a
-- unique index over all items would take a new entry at a random place (event ids are
-- random) for every item a flush stamps, twice the cost of the stamping without it.
CREATE TABLE digest_items (
    -- Blocks of ids, as outbox's (block_id()).
    id              bigint      GENERATED ALWAYS AS IDENTITY (INCREMENT BY 65536),
    event_id        uuid        NOT NULL,
    user_id         text        NOT NULL,
    type            text        NOT NULL,
    digest_key      text        NOT NULL,
    actor           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    notification_id bigint,
    flushed_at      timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- user_bucket(user_id)
    bucket          smallint    NOT NULL,
    -- The event's data, for the digest's `last`: the flush runs on the Citus workers, and
    -- events are on the coordinator.
    data            jsonb,
    PRIMARY KEY (id, bucket)
);
CREATE UNIQUE INDEX digest_items_open_event_idx ON digest_items (event_id, user_id, bucket)
    WHERE notification_id IS NULL;
CREATE INDEX digest_items_open_idx ON digest_items (user_id, type, digest_key, id)
    WHERE notification_id IS NULL;
CREATE INDEX digest_items_flushed_idx ON digest_items (flushed_at)
    WHERE notification_id IS NOT NULL;
CREATE INDEX digest_items_updated_at_idx ON digest_items (updated_at);
