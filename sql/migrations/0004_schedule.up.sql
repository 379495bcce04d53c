-- Revision 0004: scheduled work (digests, periodic events, retention).
-- Frozen once released: later changes go into a new revision and into sql/schema.sql.

-- == digests ==
-- Items of digest-mode event types, one per event and recipient, gathered under a digest
-- key (e.g. the comment id) until flush_digests() turns the due ones into one
-- notification per recipient and key. notification_id is NULL while the item is open.
CREATE TABLE digest_items (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid        NOT NULL,
    user_id         text        NOT NULL,
    type            text        NOT NULL,
    digest_key      text        NOT NULL,
    actor           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    notification_id bigint,
    flushed_at      timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, user_id)
);
CREATE INDEX digest_items_open_idx ON digest_items (user_id, type, digest_key, id)
    WHERE notification_id IS NULL;
CREATE INDEX digest_items_flushed_idx ON digest_items (flushed_at)
    WHERE notification_id IS NOT NULL;
CREATE INDEX digest_items_updated_at_idx ON digest_items (updated_at);

-- A digest notification's own data (total, actors, ...); NULL: the event's data.
ALTER TABLE notifications ADD COLUMN data jsonb;

-- == schedules ==

-- == retention ==
