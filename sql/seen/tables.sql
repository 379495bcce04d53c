-- Seen marks: what POST /v1/seen records (service/seen/).

-- A fact "this subject has seen notification tag/id". The key is the product's dedupe
-- key; a repeat inside remember_for is a no-op, after expires_at the mark is forgotten
-- (purged on a schedule, or revived in place by the next identical mark). bucket:
-- subject_bucket(subject_key). Not partitioned by time: the dedupe key must be unique
-- over every day, and a unique key of a partitioned table must hold the partition key.
CREATE TABLE seen_marks (
    tag          text        NOT NULL,
    item_id      text        NOT NULL,
    subject_key  text        NOT NULL,
    subject_kind text        NOT NULL CHECK (subject_kind IN ('client', 'driver', 'anonymous')),
    subject      jsonb       NOT NULL,
    seen_at      timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    -- NULL for a tag without a consumer: the mark is remembered, not delivered.
    outbox_id    bigint,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    bucket       smallint    NOT NULL,
    PRIMARY KEY (tag, item_id, subject_key, bucket)
);
CREATE INDEX seen_marks_expires_at_idx ON seen_marks (expires_at);
CREATE INDEX seen_marks_updated_at_idx ON seen_marks (updated_at);
