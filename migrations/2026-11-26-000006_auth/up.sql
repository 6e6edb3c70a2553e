-- Authentication and authorization: principals of the built-in token issuer, its signing keys,
-- ARM-style role assignments, agent enrollment tokens and agent credentials.
CREATE TABLE service_principals (
    -- The application (client) id, and the object id tokens carry as `oid`.
    client_id uuid PRIMARY KEY,
    object_id uuid NOT NULL UNIQUE,
    display_name text NOT NULL,
    -- pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>
    secret_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE signing_keys (
    kid text PRIMARY KEY,
    alg text NOT NULL,
    -- PKCS#8, sealed with the server's secrets key.
    private_sealed bytea NOT NULL,
    public_jwk jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE role_assignments (
    id uuid PRIMARY KEY,
    -- Object id or application id, lower case.
    principal_id text NOT NULL,
    -- `/`, `/subscriptions/{s}`, `/subscriptions/{s}/resourceGroups/{rg}` or a network watcher id.
    scope text NOT NULL,
    scope_key text NOT NULL,
    role text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (principal_id, scope_key, role)
);

CREATE TABLE agent_tokens (
    id uuid PRIMARY KEY,
    secret_hash text NOT NULL,
    scope text NOT NULL,
    scope_key text NOT NULL,
    reusable boolean NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    uses integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- An agent's credential is bound to its machine; the previous one stays valid for a short
-- while after a rotation, so that an agent that did not save the new one is not locked out.
ALTER TABLE machines
    ADD COLUMN credential_hash text,
    ADD COLUMN credential_expires_at timestamptz,
    ADD COLUMN previous_credential_hash text,
    ADD COLUMN previous_credential_until timestamptz,
    ADD COLUMN revoked_at timestamptz;
CREATE UNIQUE INDEX machines_credential ON machines (credential_hash);

-- Who started an operation: only they may read its monitor.
ALTER TABLE operations ADD COLUMN principal_id text;
