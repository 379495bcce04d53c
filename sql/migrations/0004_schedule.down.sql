-- Revision 0004 downgrade: drops scheduled work (in the reverse order of the up file).

-- == retention ==

-- == schedules ==

-- == digests ==
