-- Revision 0014_inbox_stream, undone.
DROP TABLE inbox_changes;
