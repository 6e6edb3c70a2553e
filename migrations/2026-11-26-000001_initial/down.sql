DROP TRIGGER packet_captures_changed ON packet_captures;
DROP FUNCTION packet_captures_changed();
DROP TABLE operations;
DROP TABLE packet_captures;
DROP TABLE machines;
DROP TABLE network_watchers;
DROP SEQUENCE capture_change_seq;
