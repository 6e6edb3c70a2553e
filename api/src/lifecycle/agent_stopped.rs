//! The one way a capture ends because its agent no longer runs it: status `Error`, error and
//! stop reason `AgentStopped`, and a create that was still waiting fails.

/// `UPDATE packet_captures c SET …` ending the selected captures as agent-stopped. `$1` is the
/// time of the transition; `message` is an SQL expression for the capture's error message;
/// `from_where` selects the captures (`FROM … WHERE …` or `WHERE …`, naming the table `c`).
pub(super) fn update(message: &str, from_where: &str) -> String {
    format!(
        "UPDATE packet_captures c SET status = 'Error', errors = '[\"AgentStopped\"]',
             stop_reason = 'AgentStopped', stopped_at = $1, updated_at = $1, desired_running = false,
             provisioning_state = CASE WHEN c.provisioning_state = 'Updating' THEN 'Failed'
                                       ELSE c.provisioning_state END,
             error_message = {message}
         {from_where}"
    )
}
