DROP INDEX users_email_lower_idx;
DROP INDEX users_id_prefix_idx;
