DELETE FROM packet_captures WHERE parent_id IS NOT NULL;
DROP INDEX packet_captures_instance;
DROP INDEX packet_captures_name;
ALTER TABLE packet_captures ADD CONSTRAINT packet_captures_watcher_id_name_key_key UNIQUE (watcher_id, name_key);
ALTER TABLE packet_captures DROP COLUMN is_scale_set, DROP COLUMN parent_id;
