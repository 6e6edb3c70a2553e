// The diesel schema of `migrations/`.

diesel::table! {
    network_watchers (id) {
        id -> Uuid,
        subscription_id -> Text,
        resource_group -> Text,
        name -> Text,
        identity_key -> Text,
        subscription_key -> Text,
        location -> Text,
        location_key -> Text,
        tags -> Jsonb,
        etag -> Uuid,
        provisioning_state -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    machines (resource_key) {
        resource_key -> Text,
        resource_id -> Text,
        subscription_id -> Text,
        subscription_key -> Text,
        location -> Text,
        agent_id -> Uuid,
        hostname -> Text,
        os -> Text,
        agent_version -> Text,
        interfaces -> Jsonb,
        registered_at -> Timestamptz,
        last_seen_at -> Timestamptz,
        lost -> Bool,
        credential_hash -> Nullable<Text>,
        credential_expires_at -> Nullable<Timestamptz>,
        previous_credential_hash -> Nullable<Text>,
        previous_credential_until -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    packet_captures (id) {
        id -> Uuid,
        watcher_id -> Uuid,
        name -> Text,
        name_key -> Text,
        resource_id -> Text,
        parameters -> Jsonb,
        machine_key -> Text,
        etag -> Uuid,
        provisioning_state -> Text,
        status -> Text,
        desired_running -> Bool,
        deleting -> Bool,
        capture_start_time -> Nullable<Timestamptz>,
        stopped_at -> Nullable<Timestamptz>,
        stop_reason -> Nullable<Text>,
        stop_requested_reason -> Nullable<Text>,
        stop_requested_at -> Nullable<Timestamptz>,
        errors -> Jsonb,
        error_message -> Nullable<Text>,
        packets -> Nullable<BigInt>,
        bytes -> Nullable<BigInt>,
        kernel_drops -> Nullable<BigInt>,
        files -> Jsonb,
        time_limit_seconds -> Integer,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        parent_id -> Nullable<Uuid>,
        is_scale_set -> Bool,
        storage_account_id -> Nullable<Uuid>,
        blob_name -> Nullable<Text>,
        upload_state -> Nullable<Text>,
        file_set -> Jsonb,
    }
}

diesel::table! {
    storage_accounts (id) {
        id -> Uuid,
        resource_id -> Text,
        resource_key -> Text,
        account_name -> Text,
        blob_endpoint -> Text,
        premium -> Bool,
        key_sealed -> Nullable<Bytea>,
        key_file -> Nullable<Text>,
        key_env -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    file_transfers (id) {
        id -> Uuid,
        capture_id -> Uuid,
        machine_key -> Text,
        state -> Text,
        size -> Nullable<BigInt>,
        error_message -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        file_index -> Nullable<Integer>,
    }
}

diesel::table! {
    transfer_chunks (transfer_id, seq) {
        transfer_id -> Uuid,
        seq -> Integer,
        data -> Bytea,
    }
}

diesel::table! {
    operations (id) {
        id -> Uuid,
        subscription_key -> Text,
        location -> Text,
        kind -> Text,
        resource_id -> Text,
        capture_id -> Nullable<Uuid>,
        watcher_id -> Nullable<Uuid>,
        status -> Text,
        error_code -> Nullable<Text>,
        error_message -> Nullable<Text>,
        deadline -> Timestamptz,
        created_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
        principal_id -> Nullable<Text>,
    }
}

diesel::table! {
    service_principals (client_id) {
        client_id -> Uuid,
        object_id -> Uuid,
        display_name -> Text,
        secret_hash -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        alg -> Text,
        private_sealed -> Bytea,
        public_jwk -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    role_assignments (id) {
        id -> Uuid,
        principal_id -> Text,
        scope -> Text,
        scope_key -> Text,
        role -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    agent_tokens (id) {
        id -> Uuid,
        secret_hash -> Text,
        scope -> Text,
        scope_key -> Text,
        reusable -> Bool,
        expires_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
        uses -> Integer,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    users (id) {
        id -> Uuid,
        name -> Text,
        name_key -> Text,
        password_hash -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    authorization_codes (code_hash) {
        code_hash -> Text,
        user_id -> Uuid,
        client_id -> Text,
        redirect_uri -> Text,
        code_challenge -> Text,
        scope -> Text,
        nonce -> Nullable<Text>,
        expires_at -> Timestamptz,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Text,
        family_id -> Uuid,
        user_id -> Uuid,
        client_id -> Text,
        scope -> Text,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    sign_in_links (token_hash) {
        token_hash -> Text,
        user_id -> Uuid,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    sign_in_failures (id) {
        id -> Int8,
        key -> Text,
        failed_at -> Timestamptz,
    }
}

diesel::table! {
    capture_triggers (id) {
        id -> Uuid,
        watcher_id -> Uuid,
        name -> Text,
        name_key -> Text,
        resource_id -> Text,
        properties -> Jsonb,
        enabled -> Bool,
        secret_hash -> Text,
        etag -> Uuid,
        provisioning_state -> Text,
        created_by -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    capture_trigger_events (id) {
        id -> Int8,
        trigger_id -> Uuid,
        at -> Timestamptz,
        source -> Text,
        alert_name -> Text,
        alert_key -> Text,
        alert_id -> Text,
        condition -> Text,
        machine_key -> Text,
        machine -> Nullable<Text>,
        outcome -> Text,
        reason -> Nullable<Text>,
        message -> Text,
        capture_id -> Nullable<Uuid>,
        capture_resource_id -> Nullable<Text>,
    }
}

diesel::joinable!(authorization_codes -> users (user_id));
diesel::joinable!(refresh_tokens -> users (user_id));
diesel::joinable!(sign_in_links -> users (user_id));
diesel::joinable!(packet_captures -> network_watchers (watcher_id));
diesel::joinable!(packet_captures -> storage_accounts (storage_account_id));
diesel::joinable!(file_transfers -> packet_captures (capture_id));
diesel::joinable!(capture_triggers -> network_watchers (watcher_id));
diesel::joinable!(capture_trigger_events -> capture_triggers (trigger_id));
diesel::allow_tables_to_appear_in_same_query!(
    network_watchers,
    machines,
    packet_captures,
    operations,
    storage_accounts,
    file_transfers,
    transfer_chunks,
    service_principals,
    signing_keys,
    role_assignments,
    agent_tokens,
    users,
    authorization_codes,
    refresh_tokens,
    sign_in_links,
    sign_in_failures,
    capture_triggers,
    capture_trigger_events
);
