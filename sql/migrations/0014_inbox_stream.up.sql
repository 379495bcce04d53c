-- Revision 0014_inbox_stream: the live inbox's change log (sql/notify/tables.sql).
CREATE TABLE inbox_changes (
    xid        xid8        NOT NULL DEFAULT pg_current_xact_id(),
    user_id    text        NOT NULL,
    item_id    text        NOT NULL,
    change     text        NOT NULL CHECK (change IN ('item', 'seen')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbox_changes_user_idx ON inbox_changes (user_id, xid);
CREATE INDEX inbox_changes_created_at_idx ON inbox_changes (created_at);
