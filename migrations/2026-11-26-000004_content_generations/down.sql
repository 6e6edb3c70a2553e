ALTER TABLE machines ADD COLUMN generation BIGINT NOT NULL DEFAULT 1;
DROP INDEX packet_captures_machine;
CREATE SEQUENCE capture_change_seq;
ALTER TABLE packet_captures ADD COLUMN change_seq BIGINT NOT NULL DEFAULT nextval('capture_change_seq');
CREATE INDEX packet_captures_machine ON packet_captures (machine_key, change_seq);
CREATE OR REPLACE FUNCTION packet_captures_changed() RETURNS trigger LANGUAGE plpgsql AS $$
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
