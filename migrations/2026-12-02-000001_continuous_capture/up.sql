-- Continuous capture (issue 12): a capture without a ring stops when its last file is full
-- ('FileCountReached'); the server's view of a continuous capture's files (api/src/db/file_set.rs);
-- a download may ask for one file of a continuous capture.
ALTER TABLE packet_captures
    DROP CONSTRAINT packet_captures_stop_reason_known,
    DROP CONSTRAINT packet_captures_stop_requested_reason_known;
ALTER TABLE packet_captures
    ADD CONSTRAINT packet_captures_stop_reason_known
        CHECK (stop_reason IN ('TimeExceeded', 'TotalBytesExceeded', 'StoppedByUser', 'AgentStopped', 'CaptureError', 'FileCountReached')),
    ADD CONSTRAINT packet_captures_stop_requested_reason_known
        CHECK (stop_requested_reason IN ('TimeExceeded', 'TotalBytesExceeded', 'StoppedByUser', 'AgentStopped', 'CaptureError', 'FileCountReached')),
    ADD COLUMN file_set jsonb NOT NULL DEFAULT '[]',
    ADD CONSTRAINT packet_captures_file_set_is_array CHECK (jsonb_typeof(file_set) = 'array');

ALTER TABLE file_transfers
    ADD COLUMN file_index integer CHECK (file_index >= 1);
