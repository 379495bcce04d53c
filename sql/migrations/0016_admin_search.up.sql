-- The admin's user search: ids by prefix, emails whatever their case (exact or prefix).
CREATE INDEX users_id_prefix_idx ON users (id text_pattern_ops);
CREATE INDEX users_email_lower_idx ON users (lower(email) text_pattern_ops);
