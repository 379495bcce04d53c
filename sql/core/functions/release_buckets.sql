-- A dispatcher stopping gives its buckets back at once, so the others need not wait out
-- the lease.
CREATE FUNCTION release_buckets(p_holder text) RETURNS void
LANGUAGE sql AS $$
    UPDATE dispatch_leases SET holder = NULL, expires_at = '-infinity', updated_at = now()
    WHERE holder = p_holder;
    DELETE FROM dispatch_members WHERE holder = p_holder;
$$;
