-- Network watchers: one per subscription and location.
CREATE TABLE network_watchers (
    id                 UUID PRIMARY KEY,
    subscription_id    TEXT NOT NULL,
    resource_group     TEXT NOT NULL,
    name               TEXT NOT NULL,
    -- lower-cased "subscription/resourcegroup/name": ARM identity is case-insensitive
    identity_key       TEXT NOT NULL UNIQUE,
    subscription_key   TEXT NOT NULL,
    location           TEXT NOT NULL,
    -- lower-cased, spaces removed ("East US" = "eastus")
    location_key       TEXT NOT NULL,
    tags               JSONB NOT NULL DEFAULT '{}',
    etag               UUID NOT NULL,
    provisioning_state TEXT NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX network_watchers_one_per_location ON network_watchers (subscription_key, location_key);

-- Machines whose agent registered. The machine is the ARM resource id of the VM.
CREATE TABLE machines (
    resource_key    TEXT PRIMARY KEY,
    resource_id     TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    subscription_key TEXT NOT NULL,
    location        TEXT NOT NULL,
    agent_id        UUID NOT NULL UNIQUE,
    hostname        TEXT NOT NULL,
    os              TEXT NOT NULL,
    agent_version   TEXT NOT NULL,
    interfaces      JSONB NOT NULL DEFAULT '[]',
    -- bumped on every change to what this machine should be doing; long polls compare it
    generation      BIGINT NOT NULL DEFAULT 1,
    registered_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    lost            BOOLEAN NOT NULL DEFAULT false
);

-- Every change an agent must see takes a new value of this sequence (see the trigger below).
CREATE SEQUENCE capture_change_seq;

CREATE TABLE packet_captures (
    id                  UUID PRIMARY KEY,
    change_seq          BIGINT NOT NULL DEFAULT nextval('capture_change_seq'),
    watcher_id          UUID NOT NULL REFERENCES network_watchers (id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    name_key            TEXT NOT NULL,
    -- the ARM id, with the casing of creation
    resource_id         TEXT NOT NULL,
    -- the normalised PacketCaptureParameters with defaults filled in, as echoed
    parameters          JSONB NOT NULL,
    -- lower-cased target resource id: the machine that runs it
    machine_key         TEXT NOT NULL,
    etag                UUID NOT NULL,
    provisioning_state  TEXT NOT NULL,
    status              TEXT NOT NULL,
    desired_running     BOOLEAN NOT NULL DEFAULT true,
    deleting            BOOLEAN NOT NULL DEFAULT false,
    capture_start_time  TIMESTAMPTZ,
    stopped_at          TIMESTAMPTZ,
    stop_reason         TEXT,
    stop_requested_reason TEXT,
    stop_requested_at   TIMESTAMPTZ,
    errors              JSONB NOT NULL DEFAULT '[]',
    error_message       TEXT,
    packets             BIGINT,
    bytes               BIGINT,
    kernel_drops        BIGINT,
    files               JSONB NOT NULL DEFAULT '[]',
    time_limit_seconds  INTEGER NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (watcher_id, name_key)
);
CREATE INDEX packet_captures_machine ON packet_captures (machine_key, change_seq);

-- A machine's assignments "generation" is max(change_seq) of its captures. This trigger gives a
-- changed row a new change_seq whenever a field an agent acts on changes, and wakes the long polls
-- of every server replica through NOTIFY (delivered at commit). Rows are only deleted once they
-- are no longer active, and that change has already taken a new change_seq.
CREATE FUNCTION packet_captures_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('capture_assignments', OLD.machine_key);
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NEW.status = OLD.status AND NEW.desired_running = OLD.desired_running
           AND NEW.provisioning_state = OLD.provisioning_state AND NEW.deleting = OLD.deleting THEN
            RETURN NEW;
        END IF;
        NEW.change_seq := nextval('capture_change_seq');
    END IF;
    PERFORM pg_notify('capture_assignments', NEW.machine_key);
    RETURN NEW;
END
$$;

CREATE TRIGGER packet_captures_changed BEFORE INSERT OR UPDATE OR DELETE ON packet_captures
    FOR EACH ROW EXECUTE FUNCTION packet_captures_changed();

-- Long-running operations: the monitors answer from here, also after a restart.
CREATE TABLE operations (
    id               UUID PRIMARY KEY,
    subscription_key TEXT NOT NULL,
    location         TEXT NOT NULL,
    kind             TEXT NOT NULL,
    resource_id      TEXT NOT NULL,
    capture_id       UUID,
    watcher_id       UUID,
    status           TEXT NOT NULL,
    error_code       TEXT,
    error_message    TEXT,
    deadline         TIMESTAMPTZ NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at      TIMESTAMPTZ
);
CREATE INDEX operations_in_progress ON operations (deadline) WHERE status = 'InProgress';
