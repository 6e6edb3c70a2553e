ALTER TABLE operations DROP COLUMN principal_id;
DROP INDEX machines_credential;
ALTER TABLE machines DROP COLUMN credential_hash, DROP COLUMN credential_expires_at,
    DROP COLUMN previous_credential_hash, DROP COLUMN previous_credential_until, DROP COLUMN revoked_at;
DROP TABLE agent_tokens;
DROP TABLE role_assignments;
DROP TABLE signing_keys;
DROP TABLE service_principals;
