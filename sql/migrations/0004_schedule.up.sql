-- Revision 0004: scheduled work (digests, periodic events, retention).
-- Frozen once released: later changes go into a new revision and into sql/schema.sql.

-- == digests ==

-- == schedules ==

-- == retention ==
