-- Admin: the panel's accounts, sessions and audit log, operators' consumer and provider
-- controls, managers' mailings (service/admin/, bin/admin, bin/redeliver).

-- People who use /admin, made by `bin/admin create-user`. password_hash is argon2id
-- (argon2-cffi's encoded form, parameters included, so they can be raised later).
-- manager: mailings, schedules and the read views; operator: all that, plus redeliver,
-- consumer pause/resume and provider switches.
CREATE TABLE admin_users (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text        NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    password_hash text        NOT NULL,
    role          text        NOT NULL CHECK (role IN ('manager', 'operator')),
    disabled      boolean     NOT NULL DEFAULT false,
    last_login_at timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admin_users_updated_at_idx ON admin_users (updated_at);

-- Failed logins per username, known or not (so the answer does not tell which names
-- exist): each failure grows the delay before the next answer, and `max_failures` in a
-- row lock the name until locked_until. A successful login deletes the row.
CREATE TABLE admin_login_failures (
    username        text        PRIMARY KEY,
    failures        integer     NOT NULL DEFAULT 0,
    last_failure_at timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Server-side sessions. The cookie holds a random token; only its SHA-256 is stored.
-- A session without a user is the anonymous one that carries the login form's CSRF
-- token; logging in replaces it with a new one (a token known before login is useless
-- after it). Expired rows are deleted at each sign-in.
CREATE TABLE admin_sessions (
    token_hash   bytea       PRIMARY KEY,
    user_id      bigint      REFERENCES admin_users (id) ON DELETE CASCADE,
    csrf_token   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admin_sessions_expires_at_idx ON admin_sessions (expires_at);
CREATE INDEX admin_sessions_user_idx ON admin_sessions (user_id) WHERE user_id IS NOT NULL;

-- Every admin action and every ops command (bin/redeliver, bin/admin), who, what, when,
-- with the state before and after. actor is an admin username or 'cli:<os user>'.
CREATE TABLE audit_log (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text        NOT NULL,
    action     text        NOT NULL,
    target     text,
    before     jsonb,
    after      jsonb,
    client_ip  text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_action_idx ON audit_log (action, at);
CREATE INDEX audit_log_updated_at_idx ON audit_log (updated_at);

-- An operator's pause of a consumer (or channel): its rows stay pending and are not
-- claimed until it is resumed. No row = not paused.
CREATE TABLE consumer_controls (
    consumer   text        PRIMARY KEY,
    paused     boolean     NOT NULL DEFAULT false,
    changed_by text        NOT NULL,
    reason     text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- An operator's switch of an SMS or push provider: a disabled provider is skipped in
-- the channel's failover order. No row = enabled.
CREATE TABLE provider_controls (
    channel    text        NOT NULL,
    provider   text        NOT NULL,
    enabled    boolean     NOT NULL DEFAULT true,
    changed_by text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, provider)
);

-- A manager's mailing from the admin panel. It becomes one event through the same
-- intake as POST /v1/events (producer 'admin', idempotency key 'mailing:<id>'), so a
-- double send makes one event. event_type is a configured type; for a one-off mailing it
-- is the built-in 'announcement' type and `content` holds the texts per channel and
-- locale. audience: 'all', a topic, or the user ids of an uploaded CSV (`user_ids`).
CREATE TABLE mailings (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text        NOT NULL,
    event_type   text        NOT NULL,
    content      jsonb,
    data         jsonb       NOT NULL DEFAULT '{}',
    audience     text        NOT NULL CHECK (audience IN ('all', 'topic', 'users')),
    topic        text,
    user_ids     text[],
    send_at      timestamptz,
    status       text        NOT NULL DEFAULT 'draft'
                             CHECK (status IN ('draft', 'sent', 'cancelled')),
    event_id     uuid,
    created_by   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz,
    cancelled_at timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((audience = 'topic') = (topic IS NOT NULL)),
    CHECK ((audience = 'users') = (user_ids IS NOT NULL))
);
CREATE INDEX mailings_updated_at_idx ON mailings (updated_at);
