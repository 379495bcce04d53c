-- Notifications: the configured catalog, recipients and their preferences, events,
-- notifications and the fan-out's progress (service/notify/).

-- What the configuration says about channels, categories and event types, mirrored by
-- sync_notify_config() at start-up so that the fan-out (and producers calling
-- notify_event() from SQL) read it where they run. Rows of removed entries stay, disabled:
-- history refers to them.
CREATE TABLE notify_channels (
    name       text        PRIMARY KEY,
    kind       text        NOT NULL CHECK (kind IN ('email', 'sms', 'push', 'inbox', 'webpush')),
    enabled    boolean     NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE notify_categories (
    name          text        PRIMARY KEY,
    transactional boolean     NOT NULL,
    -- channel -> on/off before the user says otherwise; channels not listed are on.
    defaults      jsonb       NOT NULL DEFAULT '{}',
    enabled       boolean     NOT NULL DEFAULT true,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE notify_event_types (
    name               text        PRIMARY KEY,
    category           text        NOT NULL,
    channels           text[]      NOT NULL,
    priority           text        NOT NULL CHECK (priority IN ('low', 'normal', 'high')),
    ttl_s              float8      NOT NULL,
    escalation_channel text,
    escalation_after_s float8,
    -- The data keys the type's templates need (read off the templates at start-up).
    required_data      text[]      NOT NULL DEFAULT '{}',
    enabled            boolean     NOT NULL DEFAULT true,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    -- A digest-mode type's events become digest_items grouped by data[digest_key]; its
    -- window says when flush_digests() sends them (digest_due_at()).
    mode               text        NOT NULL DEFAULT 'instant' CHECK (mode IN ('instant', 'digest')),
    digest_key         text,
    digest_actor       text,
    digest_window      text        CHECK (digest_window IN ('fixed', 'daily', 'sliding')),
    digest_every_s     float8,
    digest_at          time,
    digest_quiet_s     float8,
    digest_max_wait_s  float8,
    digest_max_items   integer,
    digest_show_actors integer
);

-- Recipients, kept by producer services. Contacts are what delivery needs, nothing more;
-- erase_user() removes the row, its devices, topics and preferences.
CREATE TABLE users (
    id         text        PRIMARY KEY,
    email      text,
    phone      text,
    locale     text,
    -- IANA zone for quiet hours; NULL is UTC.
    timezone   text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_updated_at_idx ON users (updated_at);
-- A bucket's users in id order: the fan-out reads them bucket by bucket (on Citus, each
-- shard its own buckets' from its copy of users: notify_audience_sql()).
CREATE INDEX users_bucket_idx ON users (user_bucket(id), id);
-- The admin's user search (sql/admin/queries/search.sql): an id by its start, an email
-- whatever its case, exactly or by its start (text_pattern_ops: LIKE 'x%' under any
-- collation).
CREATE INDEX users_id_prefix_idx ON users (id text_pattern_ops);
CREATE INDEX users_email_lower_idx ON users (lower(email) text_pattern_ops);

CREATE TABLE push_devices (
    user_id    text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token      text        NOT NULL,
    platform   text        NOT NULL CHECK (platform IN ('ios', 'android', 'web')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, token)
);
CREATE INDEX push_devices_updated_at_idx ON push_devices (updated_at);

-- Browsers' Web Push subscriptions (RFC 8030): the push service's endpoint URL and the
-- keys a message is encrypted to (RFC 8291: p256dh, auth; base64url). An endpoint is one
-- browser: registered again, for any user, it is that user's now (the newest sign-in
-- wins). Forgotten when its push service answers 404 or 410, and with the user.
CREATE TABLE webpush_subscriptions (
    endpoint   text        PRIMARY KEY,
    user_id    text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    p256dh     text        NOT NULL,
    auth       text        NOT NULL,
    -- The browser's expirationTime, if it gave one (informational: its push service's
    -- 404/410 is what removes a subscription).
    expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webpush_subscriptions_user_idx ON webpush_subscriptions (user_id, created_at);
CREATE INDEX webpush_subscriptions_updated_at_idx ON webpush_subscriptions (updated_at);

-- Audiences such as "subscribers of series 123"; keyed by topic so a topic's members are
-- read in user order, which is how the fan-out walks them in chunks.
CREATE TABLE user_topics (
    topic      text        NOT NULL,
    user_id    text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, user_id)
);
CREATE INDEX user_topics_user_idx ON user_topics (user_id);
CREATE INDEX user_topics_bucket_idx ON user_topics (topic, user_bucket(user_id), user_id);
CREATE INDEX user_topics_updated_at_idx ON user_topics (updated_at);

-- A user's switches over the configured defaults: channels = {category: {channel: bool}},
-- quiet_hours = {channel: {"start": "22:00", "end": "08:00"}} in the user's time zone.
CREATE TABLE preferences (
    user_id     text        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    muted       boolean     NOT NULL DEFAULT false,
    channels    jsonb       NOT NULL DEFAULT '{}',
    quiet_hours jsonb       NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX preferences_updated_at_idx ON preferences (updated_at);

-- Events posted by producers. (producer, idempotency_key) is unique forever: a repeat is
-- the first event. recipients is {"user_ids": [...]}, {"topic": "..."} or {"all": true}
-- (inline users are upserted and kept as their ids). A large audience is materialized in
-- chunks in user-id order; `cursor` is the last user id claimed (see event_chunks).
CREATE TABLE events (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    producer        text        NOT NULL,
    idempotency_key text        NOT NULL,
    type            text        NOT NULL,
    recipients      jsonb       NOT NULL,
    data            jsonb       NOT NULL,
    send_at         timestamptz NOT NULL DEFAULT now(),
    status          text        NOT NULL
                                CHECK (status IN ('scheduled', 'materializing', 'done',
                                                  'cancelled')),
    cursor          text,
    notified        bigint      NOT NULL DEFAULT 0,
    no_recipient    bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    materialized_at timestamptz,
    UNIQUE (producer, idempotency_key)
);
CREATE INDEX events_updated_at_idx ON events (updated_at);
CREATE INDEX events_type_created_idx ON events (type, created_at);

-- One notification per event and recipient. Its deliveries are outbox rows (kind
-- 'notification', consumer = channel); a channel not sent at all is in `suppressed`
-- (channel -> 'muted' | 'preference' | 'no_contact'). The user id is cleared when the
-- user is erased, leaving anonymous history. Seen = a seen mark of [notify].seen_tag with
-- the notification id, by this user. bucket: user_bucket(user_id) as written (erasure
-- clears the user, not the bucket).
CREATE TABLE notifications (
    -- Blocks of ids, as outbox's (block_id()).
    id         bigint      GENERATED ALWAYS AS IDENTITY (INCREMENT BY 65536),
    event_id   uuid        NOT NULL,
    user_id    text,
    type       text        NOT NULL,
    category   text        NOT NULL,
    suppressed jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- A digest notification's own data (total, actors, ...); NULL: the event's data.
    data       jsonb,
    bucket     smallint    NOT NULL,
    PRIMARY KEY (id, bucket),
    UNIQUE (event_id, user_id, bucket)
);
CREATE INDEX notifications_user_idx ON notifications (user_id, id);
CREATE INDEX notifications_updated_at_idx ON notifications (updated_at);

-- The fan-out's progress: ranges of an event's audience (user ids after `lo`, up to `hi`)
-- claimed by workers; `covered` is set when a range is materialized. A range left
-- unfinished by a worker that died is claimed again.
CREATE TABLE event_chunks (
    event_id   uuid        NOT NULL,
    lo         text        NOT NULL,
    hi         text        NOT NULL,
    covered    integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, lo)
);
CREATE INDEX event_chunks_updated_at_idx ON event_chunks (updated_at);

-- The live inbox's change log (GET /v1/inbox/stream): an item reached a user's inbox, or
-- the user marked one seen. Written in the transaction that made the change, with that
-- transaction's id, so a stream's position is a snapshot (pg_current_snapshot()) and the
-- next read takes the rows not visible in it: none missed, none twice, whatever order the
-- writers commit in. On a Citus cluster it stays a local table of the coordinator, whose
-- own transaction ids and snapshots those are. Pruned after [retention] inbox_changes.
CREATE TABLE inbox_changes (
    xid        xid8        NOT NULL DEFAULT pg_current_xact_id(),
    user_id    text        NOT NULL,
    item_id    text        NOT NULL,
    change     text        NOT NULL CHECK (change IN ('item', 'seen')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbox_changes_user_idx ON inbox_changes (user_id, xid);
CREATE INDEX inbox_changes_created_at_idx ON inbox_changes (created_at);
