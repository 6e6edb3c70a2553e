ALTER TABLE file_transfers DROP CONSTRAINT file_transfers_state_known;
ALTER TABLE operations DROP CONSTRAINT operations_status_known, DROP CONSTRAINT operations_kind_known;
ALTER TABLE network_watchers DROP CONSTRAINT network_watchers_provisioning_state_known;
ALTER TABLE packet_captures
    DROP CONSTRAINT packet_captures_upload_state_known,
    DROP CONSTRAINT packet_captures_stop_requested_reason_known,
    DROP CONSTRAINT packet_captures_stop_reason_known,
    DROP CONSTRAINT packet_captures_provisioning_state_known,
    DROP CONSTRAINT packet_captures_status_known;
