DROP INDEX machines_hostname;
DROP TABLE capture_trigger_events;
DROP TABLE capture_triggers;
