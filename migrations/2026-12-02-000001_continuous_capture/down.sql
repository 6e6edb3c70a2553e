ALTER TABLE file_transfers DROP COLUMN file_index;
ALTER TABLE packet_captures
    DROP CONSTRAINT packet_captures_file_set_is_array,
    DROP COLUMN file_set,
    DROP CONSTRAINT packet_captures_stop_reason_known,
    DROP CONSTRAINT packet_captures_stop_requested_reason_known;
ALTER TABLE packet_captures
    ADD CONSTRAINT packet_captures_stop_reason_known
        CHECK (stop_reason IN ('TimeExceeded', 'TotalBytesExceeded', 'StoppedByUser', 'AgentStopped', 'CaptureError')),
    ADD CONSTRAINT packet_captures_stop_requested_reason_known
        CHECK (stop_requested_reason IN ('TimeExceeded', 'TotalBytesExceeded', 'StoppedByUser', 'AgentStopped', 'CaptureError'));
