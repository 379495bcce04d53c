-- name: admin_create_user
-- returns: one row (id bigint)
-- purpose: bin/admin create-user: a new admin account with its argon2id hash.
INSERT INTO admin_users (username, password_hash, role)
VALUES (%(username)s, %(password_hash)s, %(role)s)
RETURNING id;

-- name: admin_set_password
-- returns: rows (id bigint): the account changed, if it exists
-- purpose: bin/admin set-password, and a login that upgrades an old hash's parameters.
UPDATE admin_users SET password_hash = %(password_hash)s, updated_at = now()
WHERE username = %(username)s
RETURNING id;

-- name: admin_set_disabled
-- returns: rows (id bigint): the account changed, if it exists
-- purpose: bin/admin disable / enable; a disabled account's sessions end with it.
WITH changed AS (
    UPDATE admin_users SET disabled = %(disabled)s, updated_at = now()
    WHERE username = %(username)s
    RETURNING id
), ended AS (
    DELETE FROM admin_sessions AS s USING changed WHERE s.user_id = changed.id AND %(disabled)s
)
SELECT id FROM changed;

-- name: admin_list_users
-- returns: rows (username text, role text, disabled boolean, last_login_at timestamptz,
--   created_at timestamptz), by name
-- purpose: bin/admin list.
SELECT username, role, disabled, last_login_at, created_at FROM admin_users ORDER BY username;

-- name: admin_find_user
-- returns: zero or one row (id bigint, username text, password_hash text, role text,
--   disabled boolean)
-- purpose: the login form: the account a username names.
SELECT id, username, password_hash, role, disabled FROM admin_users WHERE username = %(username)s;

-- name: admin_login_locked
-- returns: zero or one row (failures integer, locked_until timestamptz): only while the
--   username is locked
-- purpose: refuse a login attempt of a locked username before its password is checked.
SELECT failures, locked_until FROM admin_login_failures
WHERE username = %(username)s AND locked_until > now();

-- name: admin_login_failed
-- returns: one row (failures integer, locked_until timestamptz)
-- purpose: count a failed login of a username (known or not): the failures in a row, and a
--   lock once they reach max_failures. A lock that has run out starts the count again.
INSERT INTO admin_login_failures AS f (username, failures, last_failure_at, locked_until)
VALUES (%(username)s, 1, now(), CASE WHEN %(max_failures)s <= 1
                                     THEN now() + %(lockout)s::interval END)
ON CONFLICT (username) DO UPDATE
SET failures = CASE WHEN f.locked_until IS NOT NULL AND f.locked_until <= now() THEN 1
                    ELSE f.failures + 1 END,
    locked_until = CASE
        WHEN (CASE WHEN f.locked_until IS NOT NULL AND f.locked_until <= now() THEN 1
                   ELSE f.failures + 1 END) >= %(max_failures)s
        THEN now() + %(lockout)s::interval END,
    last_failure_at = now(),
    updated_at = now()
RETURNING failures, locked_until;

-- name: admin_unlock
-- returns: zero or one row (failures integer, locked_until timestamptz): the failures
--   forgotten, none if the username had none
-- purpose: bin/admin unlock: end a username's lock (and its count of failures) now.
DELETE FROM admin_login_failures WHERE username = %(username)s
RETURNING failures, locked_until;

-- name: admin_locked_usernames
-- returns: rows (username text): the usernames locked now, by name
-- purpose: bin/admin unlock names them (with the accounts) when asked to unlock a name
--   that is neither an account nor has failures.
SELECT username FROM admin_login_failures WHERE locked_until > now() ORDER BY username;

-- name: admin_login_succeeded
-- returns: nothing
-- purpose: a good password: forget the username's failures and remember the login.
WITH forgotten AS (
    DELETE FROM admin_login_failures WHERE username = %(username)s
)
UPDATE admin_users SET last_login_at = now(), updated_at = now() WHERE id = %(user_id)s;

-- name: admin_session_create
-- returns: nothing
-- purpose: a new session, anonymous (user_id NULL: it carries the login form's CSRF token)
--   or logged in; the cookie holds the token, the row its SHA-256.
INSERT INTO admin_sessions (token_hash, user_id, csrf_token, expires_at)
VALUES (%(token_hash)s, %(user_id)s, %(csrf_token)s, now() + %(ttl)s::interval);

-- name: admin_session_find
-- returns: zero or one row (user_id bigint, username text, role text, csrf_token text,
--   last_seen_at timestamptz): a session that has neither expired nor idled out, with its
--   account unless anonymous (a disabled account's sessions are never found)
-- purpose: every admin request: who is asking.
SELECT s.user_id, u.username, u.role, s.csrf_token, s.last_seen_at
FROM admin_sessions AS s
LEFT JOIN admin_users AS u ON u.id = s.user_id
WHERE s.token_hash = %(token_hash)s
  AND s.expires_at > now()
  AND s.last_seen_at > now() - %(idle)s::interval
  AND (s.user_id IS NULL OR NOT u.disabled);

-- name: admin_session_touch
-- returns: nothing
-- purpose: keep a session in use from idling out (called at most once a minute per
--   session, not on every request).
UPDATE admin_sessions SET last_seen_at = now(), updated_at = now()
WHERE token_hash = %(token_hash)s;

-- name: admin_session_delete
-- returns: nothing
-- purpose: logout, and the login that replaces the anonymous session with a new one.
DELETE FROM admin_sessions WHERE token_hash = %(token_hash)s;

-- name: admin_sessions_prune
-- returns: one row (pruned bigint)
-- purpose: drop sessions that have expired or idled out (run at start-up and by login).
WITH gone AS (
    DELETE FROM admin_sessions
    WHERE expires_at <= now() OR last_seen_at <= now() - %(idle)s::interval
    RETURNING 1
)
SELECT count(*) AS pruned FROM gone;
