-- An agent's assignments generation is now a hash of their content, computed by the server:
-- sequence values taken at update time do not follow commit order, and a deleted row takes its
-- value with it. The trigger only wakes the long polls.
CREATE OR REPLACE FUNCTION packet_captures_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('capture_assignments', OLD.machine_key);
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.status = OLD.status AND NEW.desired_running = OLD.desired_running
       AND NEW.provisioning_state = OLD.provisioning_state AND NEW.deleting = OLD.deleting THEN
        RETURN NEW;
    END IF;
    PERFORM pg_notify('capture_assignments', NEW.machine_key);
    RETURN NEW;
END
$$;
DROP INDEX packet_captures_machine;
ALTER TABLE packet_captures DROP COLUMN change_seq;
DROP SEQUENCE capture_change_seq;
CREATE INDEX packet_captures_machine ON packet_captures (machine_key) WHERE status IN ('NotStarted', 'Running');
ALTER TABLE machines DROP COLUMN generation;
