-- Storage accounts captures can be uploaded to, and the upload state of each capture.
CREATE TABLE storage_accounts (
    id uuid PRIMARY KEY,
    -- ARM id as registered, and its case-insensitive key.
    resource_id text NOT NULL,
    resource_key text NOT NULL UNIQUE,
    account_name text NOT NULL,
    -- e.g. https://acct.blob.core.windows.net or http://127.0.0.1:10000/devstoreaccount1
    blob_endpoint text NOT NULL,
    premium boolean NOT NULL DEFAULT false,
    -- Exactly one form of the account key: sealed with the server's secrets key (AES-256-GCM,
    -- nonce then ciphertext), or a file / environment variable the server reads when it signs.
    key_sealed bytea,
    key_file text,
    key_env text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(key_sealed, key_file, key_env) = 1)
);

ALTER TABLE packet_captures
    ADD COLUMN storage_account_id uuid REFERENCES storage_accounts (id) ON DELETE SET NULL,
    -- Container-relative blob name, fixed at creation.
    ADD COLUMN blob_name text,
    -- NULL: no storage account; Pending, Uploaded, Failed.
    ADD COLUMN upload_state text;

-- A file-only capture's file, on its way from the agent to a caller through the database (so
-- that the agent and the caller may talk to different server replicas). The agent writes
-- numbered chunks; the caller's replica streams and deletes them.
CREATE TABLE file_transfers (
    id uuid PRIMARY KEY,
    capture_id uuid NOT NULL REFERENCES packet_captures (id) ON DELETE CASCADE,
    machine_key text NOT NULL,
    -- Requested, Sending, Done, Failed
    state text NOT NULL DEFAULT 'Requested',
    size bigint,
    error_message text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX file_transfers_machine ON file_transfers (machine_key) WHERE state = 'Requested';

CREATE TABLE transfer_chunks (
    transfer_id uuid NOT NULL REFERENCES file_transfers (id) ON DELETE CASCADE,
    seq integer NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (transfer_id, seq)
);
