-- Revision 0004 downgrade: drops scheduled work (in the reverse order of the up file).

-- == retention ==

-- == schedules ==

-- == digests ==
ALTER TABLE notifications DROP COLUMN data;
DROP TABLE IF EXISTS digest_items;
