CREATE FUNCTION scheduler_active(p_backend text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM scheduler_state AS s WHERE s.backend = p_backend)
$$;
