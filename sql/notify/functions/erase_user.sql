-- Forget a user: contacts, devices, topics and preferences go; their notifications stay
-- as anonymous history (user id cleared), and rows not yet sent are suppressed.
CREATE FUNCTION erase_user(p_user text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE outbox AS o SET status = 'suppressed', reason = 'erased', ordering_key = 'erased',
                           claimed_until = NULL, updated_at = now()
    FROM notifications AS n
    -- The user's bucket: one shard on Citus (user_bucket()).
    WHERE n.user_id = p_user AND n.bucket = user_bucket(p_user)
      AND o.notification_id = n.id AND o.bucket = n.bucket AND o.status = 'pending';
    UPDATE outbox AS o SET ordering_key = 'erased', updated_at = now()
    FROM notifications AS n
    WHERE n.user_id = p_user AND n.bucket = user_bucket(p_user)
      AND o.notification_id = n.id AND o.bucket = n.bucket AND o.ordering_key <> 'erased';
    UPDATE notifications SET user_id = NULL, updated_at = now()
    WHERE user_id = p_user AND bucket = user_bucket(p_user);
    DELETE FROM users WHERE id = p_user;
    RETURN FOUND;
END
$$;
