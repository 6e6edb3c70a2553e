//! ARM's PUT of a resource that cannot be updated (a packet capture): conditional headers and
//! idempotent retries, decided as a pure function of what exists.

use crate::error::{ApiError, ErrorCode};

/// `If-Match` / `If-None-Match` of the request.
#[derive(Debug, Default, Clone)]
pub struct Preconditions {
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
}

impl Preconditions {
    pub fn of(req: &actix_web::HttpRequest) -> Preconditions {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_string())
        };
        Preconditions {
            if_match: header("If-Match"),
            if_none_match: header("If-None-Match"),
        }
    }
}

/// What the PUT found under its name.
#[derive(Debug, Clone)]
pub struct Existing {
    /// The quoted ETag, as served.
    pub etag: String,
    /// A delete is running.
    pub deleting: bool,
    /// The stored parameters equal the request's (what the client gave, not what the server
    /// derived).
    pub same_parameters: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PutDecision {
    /// Nothing there: create it.
    Create,
    /// The same resource exists: answer it again (a retry of the same PUT).
    AnswerExisting,
}

/// Whether `header_value` (a list of ETags, or `*`) names `current`.
pub fn etag_matches(header_value: &str, current: &str) -> bool {
    header_value.split(',').map(str::trim).any(|t| {
        t == "*" || t == current || t.trim_start_matches("W/") == current.trim_start_matches("W/")
    })
}

/// The PUT of `name` given what exists, or the error to answer.
pub fn decide(
    existing: Option<&Existing>,
    pre: &Preconditions,
    name: &str,
) -> Result<PutDecision, ApiError> {
    let Some(existing) = existing else {
        if pre.if_match.is_some() {
            return Err(ApiError::new(
                ErrorCode::PreconditionFailed,
                format!("The packet capture '{name}' does not exist, so If-Match cannot match."),
            ));
        }
        return Ok(PutDecision::Create);
    };
    if pre
        .if_none_match
        .as_deref()
        .is_some_and(|h| etag_matches(h, &existing.etag))
    {
        return Err(ApiError::new(
            ErrorCode::PreconditionFailed,
            format!("The packet capture '{name}' already exists (If-None-Match)."),
        ));
    }
    if pre
        .if_match
        .as_deref()
        .is_some_and(|h| !etag_matches(h, &existing.etag))
    {
        return Err(ApiError::new(
            ErrorCode::PreconditionFailed,
            format!(
                "The ETag of packet capture '{name}' is {}, not the one in If-Match.",
                existing.etag
            ),
        ));
    }
    if existing.deleting {
        return Err(ApiError::new(
            ErrorCode::AnotherOperationInProgress,
            format!(
                "The packet capture '{name}' is being deleted; create it again once the delete completed."
            ),
        ));
    }
    if !existing.same_parameters {
        return Err(ApiError::new(
            ErrorCode::PacketCaptureParametersConflict,
            format!(
                "A packet capture named '{name}' already exists with different parameters. Packet captures cannot be updated: delete it first, or use another name."
            ),
        ));
    }
    Ok(PutDecision::AnswerExisting)
}

/// After a create lost a race to a concurrent PUT of the same name: that PUT's resource, judged
/// as if it had been there, or a conflict when it is already gone again.
pub fn decide_after_race(
    existing: Option<&Existing>,
    pre: &Preconditions,
    name: &str,
) -> Result<PutDecision, ApiError> {
    match existing {
        Some(_) => decide(existing, pre, name),
        None => Err(ApiError::new(
            ErrorCode::Conflict,
            format!("The packet capture '{name}' was deleted while it was being created; retry."),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn existing(deleting: bool, same_parameters: bool) -> Existing {
        Existing {
            etag: "W/\"abc\"".to_string(),
            deleting,
            same_parameters,
        }
    }

    fn pre(if_match: Option<&str>, if_none_match: Option<&str>) -> Preconditions {
        Preconditions {
            if_match: if_match.map(String::from),
            if_none_match: if_none_match.map(String::from),
        }
    }

    fn code(r: Result<PutDecision, ApiError>) -> String {
        match r {
            Ok(d) => format!("{d:?}"),
            Err(e) => e.arm_parts().1.to_string(),
        }
    }

    #[test]
    fn nothing_there_is_created_unless_if_match() {
        assert_eq!(code(decide(None, &pre(None, None), "pc")), "Create");
        assert_eq!(code(decide(None, &pre(None, Some("*")), "pc")), "Create");
        assert_eq!(
            code(decide(None, &pre(Some("*"), None), "pc")),
            "PreconditionFailed"
        );
    }

    #[test]
    fn same_parameters_answer_the_existing_capture() {
        let e = existing(false, true);
        assert_eq!(
            code(decide(Some(&e), &pre(None, None), "pc")),
            "AnswerExisting"
        );
        assert_eq!(
            code(decide(Some(&e), &pre(Some("W/\"abc\""), None), "pc")),
            "AnswerExisting"
        );
        assert_eq!(
            code(decide(
                Some(&e),
                &pre(Some("\"abc\", W/\"abc\""), None),
                "pc"
            )),
            "AnswerExisting"
        );
    }

    #[test]
    fn preconditions_come_before_conflicts() {
        let e = existing(true, false);
        assert_eq!(
            code(decide(Some(&e), &pre(None, Some("*")), "pc")),
            "PreconditionFailed"
        );
        assert_eq!(
            code(decide(Some(&e), &pre(Some("W/\"other\""), None), "pc")),
            "PreconditionFailed"
        );
        assert_eq!(
            code(decide(Some(&e), &pre(None, None), "pc")),
            "AnotherOperationInProgress"
        );
        assert_eq!(
            code(decide(
                Some(&existing(false, false)),
                &pre(None, None),
                "pc"
            )),
            "PacketCaptureParametersConflict"
        );
    }

    #[test]
    fn a_lost_race_is_judged_against_the_winner() {
        assert_eq!(
            code(decide_after_race(None, &pre(None, None), "pc")),
            "Conflict"
        );
        assert_eq!(
            code(decide_after_race(
                Some(&existing(false, true)),
                &pre(None, None),
                "pc"
            )),
            "AnswerExisting"
        );
    }
}
