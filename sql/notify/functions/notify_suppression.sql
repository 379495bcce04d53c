-- One of the per-channel rules of a notification, shared by the instant fan-out
-- (notify_materialize_chunk()) and the digests' (flush_digests()) so that both send by
-- the same rules. A single SQL expression, which the planner inlines into the calling
-- statement: no function call per row.
--
-- Why one channel of a notification is not sent ('muted', 'preference', 'no_contact'), or
-- NULL when it is: the user's mute and category switches (not for transactional
-- categories; the switches' precedence is notify_preference_on()), then the contact the
-- channel's kind needs. has_device: the user has a device of the kind (a push device for
-- push, a Web Push subscription for webpush), evaluated only when the rules get that far
-- (a push or webpush channel whose other rules passed).
CREATE FUNCTION notify_suppression(
    transactional boolean, muted boolean, switches jsonb, defaults jsonb, category text,
    channel text, kind text, email text, phone text, has_device boolean
) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN NOT transactional AND coalesce(muted, false) THEN 'muted'
        WHEN NOT notify_preference_on(transactional, switches, defaults, category, channel)
            THEN 'preference'
        WHEN (kind = 'email' AND email IS NULL)
             OR (kind = 'sms' AND phone IS NULL)
             OR (kind IN ('push', 'webpush') AND NOT has_device)
            THEN 'no_contact'
    END
$$;
