-- States are stored by name; these constraints keep them to the names that
-- api/src/lifecycle/states.rs knows. A new state: a new variant there and a new migration here.
ALTER TABLE packet_captures
    ADD CONSTRAINT packet_captures_status_known
        CHECK (status IN ('NotStarted', 'Running', 'Stopped', 'Error')),
    -- 'Deleting' is shown from the `deleting` flag, never stored for a capture.
    ADD CONSTRAINT packet_captures_provisioning_state_known
        CHECK (provisioning_state IN ('Updating', 'Succeeded', 'Failed', 'Canceled')),
    ADD CONSTRAINT packet_captures_stop_reason_known
        CHECK (stop_reason IN ('TimeExceeded', 'TotalBytesExceeded', 'StoppedByUser', 'AgentStopped', 'CaptureError')),
    ADD CONSTRAINT packet_captures_stop_requested_reason_known
        CHECK (stop_requested_reason IN ('TimeExceeded', 'TotalBytesExceeded', 'StoppedByUser', 'AgentStopped', 'CaptureError')),
    ADD CONSTRAINT packet_captures_upload_state_known
        CHECK (upload_state IN ('Pending', 'Uploaded', 'Failed'));

ALTER TABLE network_watchers
    ADD CONSTRAINT network_watchers_provisioning_state_known
        CHECK (provisioning_state IN ('Succeeded', 'Deleting'));

ALTER TABLE operations
    ADD CONSTRAINT operations_kind_known
        CHECK (kind IN ('CreateCapture', 'StopCapture', 'DeleteCapture', 'DeleteWatcher')),
    ADD CONSTRAINT operations_status_known
        CHECK (status IN ('InProgress', 'Succeeded', 'Failed', 'Canceled'));

ALTER TABLE file_transfers
    ADD CONSTRAINT file_transfers_state_known
        CHECK (state IN ('Requested', 'Sending', 'Done', 'Failed'));
