-- People who sign in to the console through the built-in issuer (authorization code flow with
-- PKCE), their sessions (rotating refresh tokens), one-time sign-in links, and the record of
-- failed sign-ins that throttles password guessing.
CREATE TABLE users (
    -- The object id tokens carry as `oid` and `sub` (what role assignments name).
    id uuid PRIMARY KEY,
    name text NOT NULL,
    -- lower(name): names are unique without case.
    name_key text NOT NULL UNIQUE,
    -- pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>; NULL: no usable password (sign-in links only).
    password_hash text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (char_length(name) BETWEEN 1 AND 64)
);

-- Authorization codes: single use (deleted when redeemed), short-lived, bound to the client,
-- the redirect URI and the PKCE challenge. Only a SHA-256 of the code is stored.
CREATE TABLE authorization_codes (
    code_hash text PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id text NOT NULL,
    redirect_uri text NOT NULL,
    code_challenge text NOT NULL,
    scope text NOT NULL,
    nonce text,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX authorization_codes_expiry ON authorization_codes (expires_at);

-- Refresh tokens, rotated at each use: every token of one sign-in shares a family, which ends
-- at a fixed time (the session's end) or when revoked (sign-out, reuse of a rotated token, a
-- new password). Only a SHA-256 of a token is stored.
CREATE TABLE refresh_tokens (
    token_hash text PRIMARY KEY,
    family_id uuid NOT NULL,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id text NOT NULL,
    scope text NOT NULL,
    expires_at timestamptz NOT NULL,
    -- Set when the token was exchanged for its successor.
    used_at timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);

-- One-time sign-in links (`/?signin=TOKEN`); only a SHA-256 of the token is stored.
CREATE TABLE sign_in_links (
    token_hash text PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sign_in_links_expiry ON sign_in_links (expires_at);

-- Failed sign-ins, by key (`user:<name>` or `address:<ip>`), kept for the throttling window.
CREATE TABLE sign_in_failures (
    id bigserial PRIMARY KEY,
    key text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sign_in_failures_key ON sign_in_failures (key, failed_at);
