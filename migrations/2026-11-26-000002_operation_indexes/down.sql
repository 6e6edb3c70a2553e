DROP INDEX operations_in_progress_kind;
DROP INDEX operations_capture;
