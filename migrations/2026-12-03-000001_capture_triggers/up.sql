-- Capture triggers (issue 14): alerts from Prometheus Alertmanager or Azure Monitor start
-- ordinary packet captures. A trigger is a child of its network watcher (removed with it).
CREATE TABLE capture_triggers (
    -- The opaque trigger id of the webhook URLs.
    id                 uuid PRIMARY KEY,
    watcher_id         uuid NOT NULL REFERENCES network_watchers (id) ON DELETE CASCADE,
    name               text NOT NULL,
    -- lower(name): names are unique per watcher without case.
    name_key           text NOT NULL,
    -- the ARM id, with the casing of creation
    resource_id        text NOT NULL,
    -- the normalised properties (enabled, captureTemplate, machines, guards) with defaults filled in
    properties         jsonb NOT NULL,
    enabled            boolean NOT NULL,
    -- sha256$<hex> of the webhook secret (32 random bytes, shown once)
    secret_hash        text NOT NULL,
    etag               uuid NOT NULL,
    provisioning_state text NOT NULL,
    -- the principal that created the trigger
    created_by         text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT capture_triggers_provisioning_state_known CHECK (provisioning_state IN ('Succeeded'))
);
CREATE UNIQUE INDEX capture_triggers_name ON capture_triggers (watcher_id, name_key);

-- What each alert delivered to a trigger did. One row per (trigger, alert, condition, machine):
-- the unique index makes repeated deliveries (both senders retry) create one capture, across
-- replicas and concurrent deliveries (INSERT … ON CONFLICT DO NOTHING); a repeat of a Skipped
-- event replaces it (the guards are checked again). The index holds hashes of the keys, whose
-- texts may be long.
CREATE TABLE capture_trigger_events (
    id            bigserial PRIMARY KEY,
    trigger_id    uuid NOT NULL REFERENCES capture_triggers (id) ON DELETE CASCADE,
    at            timestamptz NOT NULL,
    source        text NOT NULL,
    alert_name    text NOT NULL,
    -- Alertmanager: fingerprint and startsAt; Azure Monitor: alertId and firedDateTime
    alert_key     text NOT NULL,
    -- the fingerprint or alertId, as shown
    alert_id      text NOT NULL,
    condition     text NOT NULL,
    -- lower-cased machine id; '' when the alert named none
    machine_key   text NOT NULL,
    machine       text,
    outcome       text NOT NULL,
    reason        text,
    message       text NOT NULL,
    -- the capture created or stopped (no foreign key: deleting a capture keeps its history)
    capture_id    uuid,
    capture_resource_id text,
    CONSTRAINT capture_trigger_events_source_known CHECK (source IN ('Alertmanager', 'AzureMonitor')),
    CONSTRAINT capture_trigger_events_condition_known CHECK (condition IN ('Fired', 'Resolved')),
    CONSTRAINT capture_trigger_events_outcome_known
        CHECK (outcome IN ('CaptureCreated', 'CaptureStopped', 'Skipped')),
    CONSTRAINT capture_trigger_events_reason_known
        CHECK (reason IN ('OutsideScope', 'Cooldown', 'ConcurrencyLimit', 'AlreadyCapturing',
                          'MachineNotRegistered', 'OtherRegion', 'NoMachineInAlert',
                          'TriggerDisabled', 'StorageAccountNotFound', 'StopNotRequested',
                          'NoRunningCapture', 'CaptureNotCreated'))
);
CREATE UNIQUE INDEX capture_trigger_events_once
    ON capture_trigger_events (trigger_id, md5(alert_key), condition, md5(machine_key));
CREATE INDEX capture_trigger_events_recent ON capture_trigger_events (trigger_id, id DESC);
CREATE INDEX capture_trigger_events_machine
    ON capture_trigger_events (trigger_id, machine_key, at DESC) WHERE outcome = 'CaptureCreated';

-- Alerts that name their machine by host name (Prometheus `instance`) find it here.
CREATE INDEX machines_hostname ON machines (subscription_key, lower(hostname));
