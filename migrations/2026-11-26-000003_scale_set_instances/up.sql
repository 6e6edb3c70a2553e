-- A capture of a VM scale set (targetType AzureVMSS) is one ARM resource (the parent row, whose
-- state is aggregated from its instances) and one hidden instance row per scale set instance that
-- runs it. Agents see instance rows like any capture of their machine.
ALTER TABLE packet_captures
    ADD COLUMN parent_id UUID REFERENCES packet_captures (id) ON DELETE CASCADE,
    ADD COLUMN is_scale_set BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE packet_captures DROP CONSTRAINT packet_captures_watcher_id_name_key_key;
CREATE UNIQUE INDEX packet_captures_name ON packet_captures (watcher_id, name_key) WHERE parent_id IS NULL;
CREATE UNIQUE INDEX packet_captures_instance ON packet_captures (parent_id, machine_key) WHERE parent_id IS NOT NULL;
