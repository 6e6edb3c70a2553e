-- Operations are looked up by their capture (agent reports, settle) and, while in progress, by kind.
CREATE INDEX operations_capture ON operations (capture_id);
CREATE INDEX operations_in_progress_kind ON operations (kind) WHERE status = 'InProgress';
