-- name: put_users
-- returns: one row (users bigint, created bigint): users written, and how many were new
-- purpose: PUT /v1/users/{id} and the bulk PUT /v1/users in one set-based statement: each
--   user is replaced whole (fields left out become NULL) and its devices become exactly
--   the list given. The input is one JSON array of user objects with ids unique (the API
--   checks); rows are written in id order so concurrent imports cannot deadlock.
WITH input AS (
    SELECT x.id, x.email, x.phone, x.locale, x.timezone, coalesce(x.devices, '[]') AS devices
    FROM jsonb_to_recordset(%(users)s::jsonb)
         AS x(id text, email text, phone text, locale text, timezone text, devices jsonb)
),
upserted AS (
    INSERT INTO users AS u (id, email, phone, locale, timezone)
    SELECT id, email, phone, locale, timezone FROM input
    ORDER BY id
    ON CONFLICT (id) DO UPDATE
        SET email = excluded.email, phone = excluded.phone, locale = excluded.locale,
            -- excluded.updated_at is now(): Citus takes no function but an immutable one here.
            timezone = excluded.timezone, updated_at = excluded.updated_at
    RETURNING u.id, (xmax = 0) AS created
),
wanted AS (
    SELECT i.id AS user_id, d.token, d.platform
    FROM input AS i
    CROSS JOIN jsonb_to_recordset(i.devices) AS d(token text, platform text)
),
dropped AS (
    DELETE FROM push_devices AS p
    USING input AS i
    WHERE p.user_id = i.id
      AND NOT EXISTS (SELECT 1 FROM wanted AS w WHERE w.user_id = p.user_id AND w.token = p.token)
),
added AS (
    -- The users' rows are checked by the foreign key at the end of the statement, when
    -- the upsert above is visible.
    INSERT INTO push_devices AS p (user_id, token, platform)
    SELECT user_id, token, platform FROM wanted
    ORDER BY user_id, token
    ON CONFLICT (user_id, token) DO UPDATE
        SET platform = excluded.platform, updated_at = excluded.updated_at
        WHERE p.platform <> excluded.platform
)
SELECT count(*) AS users, count(*) FILTER (WHERE created) AS created FROM upserted;

-- name: get_user
-- returns: zero or one row (id, email, phone, locale, timezone text, devices jsonb
--   [{token, platform}], topics text[], webpush_subscriptions jsonb [{endpoint,
--   expiration_time, created_at}] newest first, created_at, updated_at timestamptz)
-- purpose: GET /v1/users/{id}.
SELECT u.id, u.email, u.phone, u.locale, u.timezone,
       coalesce((SELECT jsonb_agg(jsonb_build_object('token', d.token, 'platform', d.platform)
                                  ORDER BY d.token)
                 FROM push_devices AS d WHERE d.user_id = u.id), '[]') AS devices,
       ARRAY(SELECT t.topic FROM user_topics AS t WHERE t.user_id = u.id ORDER BY t.topic)
           AS topics,
       coalesce((SELECT jsonb_agg(jsonb_build_object('endpoint', w.endpoint,
                                                     'expiration_time', w.expires_at,
                                                     'created_at', w.created_at)
                                  ORDER BY w.created_at DESC, w.endpoint)
                 FROM webpush_subscriptions AS w WHERE w.user_id = u.id), '[]')
           AS webpush_subscriptions,
       u.created_at, u.updated_at
FROM users AS u
WHERE u.id = %(user_id)s;

-- name: erase_user
-- returns: one row (erased boolean): false when there was no such user
-- purpose: DELETE /v1/users/{id}: contacts, devices, topics and preferences go; the
--   user's notifications stay as anonymous history and unsent deliveries are suppressed.
SELECT erase_user(%(user_id)s) AS erased;

-- name: add_user_topic
-- returns: one row (known boolean): false when there is no such user (nothing written)
-- purpose: PUT /v1/users/{id}/topics/{topic}; a repeat is a no-op.
WITH target AS (
    SELECT id FROM users WHERE id = %(user_id)s
),
added AS (
    INSERT INTO user_topics (topic, user_id)
    SELECT %(topic)s, id FROM target
    ON CONFLICT (topic, user_id) DO NOTHING
)
SELECT EXISTS (SELECT 1 FROM target) AS known;

-- name: remove_user_topic
-- returns: one row (known boolean): false when there is no such user
-- purpose: DELETE /v1/users/{id}/topics/{topic}; removing a topic the user is not in is a
--   no-op.
WITH removed AS (
    DELETE FROM user_topics WHERE topic = %(topic)s AND user_id = %(user_id)s
)
SELECT EXISTS (SELECT 1 FROM users WHERE id = %(user_id)s) AS known;

-- name: time_zone_names
-- returns: rows (name text)
-- purpose: the time zones PostgreSQL knows (its tz database may differ from Python's);
--   read once per API process to validate users' zones before anything is written.
SELECT name FROM pg_timezone_names;
