-- name: put_webpush_subscription
-- returns: one row (known boolean, created boolean, expiration_time timestamptz,
--   created_at timestamptz): known false when there is no such user (nothing written);
--   created false when the endpoint was registered before (its keys are replaced)
-- purpose: PUT /v1/users/{id}/webpush-subscriptions and the signed-in client's own: one
--   browser's subscription, keyed by its endpoint. An endpoint registered for another
--   user moves to this one (the browser's newest sign-in wins) and counts as new. A user
--   keeps their newest 20 subscriptions: older ones go.
WITH target AS (
    SELECT id FROM users WHERE id = %(user_id)s
),
oldest AS (
    DELETE FROM webpush_subscriptions AS w
    WHERE w.user_id = %(user_id)s AND w.endpoint IN (
        SELECT o.endpoint FROM webpush_subscriptions AS o
        WHERE o.user_id = %(user_id)s AND o.endpoint <> %(endpoint)s
        ORDER BY o.created_at DESC, o.endpoint
        OFFSET 19)
),
put AS (
    INSERT INTO webpush_subscriptions AS w (endpoint, user_id, p256dh, auth, expires_at)
    SELECT %(endpoint)s, t.id, %(p256dh)s, %(auth)s, %(expires_at)s FROM target AS t
    ON CONFLICT (endpoint) DO UPDATE
        SET p256dh = excluded.p256dh, auth = excluded.auth, expires_at = excluded.expires_at,
            -- excluded's times are now(): Citus takes no function but an immutable one here.
            created_at = CASE WHEN w.user_id = excluded.user_id THEN w.created_at
                              ELSE excluded.created_at END,
            user_id = excluded.user_id, updated_at = excluded.updated_at
    RETURNING w.created_at = w.updated_at AS created, w.expires_at, w.created_at
)
SELECT EXISTS (SELECT 1 FROM target) AS known, coalesce(p.created, false) AS created,
       p.expires_at, p.created_at
FROM (SELECT 1) AS one
LEFT JOIN put AS p ON true;

-- name: delete_webpush_subscription
-- returns: one row (known boolean): false when there is no such user
-- purpose: DELETE /v1/users/{id}/webpush-subscriptions and the signed-in client's own:
--   forget the user's subscription of this endpoint; one not there is a no-op.
WITH removed AS (
    DELETE FROM webpush_subscriptions
    WHERE endpoint = %(endpoint)s AND user_id = %(user_id)s
)
SELECT EXISTS (SELECT 1 FROM users WHERE id = %(user_id)s) AS known;
