DROP TABLE transfer_chunks;
DROP TABLE file_transfers;
ALTER TABLE packet_captures DROP COLUMN storage_account_id, DROP COLUMN blob_name, DROP COLUMN upload_state;
DROP TABLE storage_accounts;
