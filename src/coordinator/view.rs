//! JSON shapes of the coordinator's answers (API.md §1).

use serde_json::{Value, json};

use super::store::{BranchRow, ResourceRow, TxRow};
use crate::time::rfc3339;

fn json_text(text: Option<&str>) -> Value {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

pub fn resource(r: &ResourceRow) -> Value {
    json!({
        "name": r.name,
        "try_url": r.try_url,
        "confirm_url": r.confirm_url,
        "cancel_url": r.cancel_url,
        "created_at": rfc3339(r.created_at),
        "updated_at": rfc3339(r.updated_at),
    })
}

pub fn branch(b: &BranchRow) -> Value {
    json!({
        "branch_id": b.branch_id,
        "resource": b.resource,
        "status": b.status,
        "payload": json_text(Some(&b.payload)),
        "response": json_text(b.response.as_deref()),
        "attempts": b.attempts,
        "last_error": b.last_error,
        "updated_at": rfc3339(b.updated_at),
    })
}

pub fn transaction(t: &TxRow, branches: &[BranchRow]) -> Value {
    json!({
        "gid": t.gid,
        "status": t.status,
        "created_at": rfc3339(t.created_at),
        "updated_at": rfc3339(t.updated_at),
        "expires_at": rfc3339(t.expires_at),
        "finished_at": t.finished_at.map(rfc3339),
        "reason": t.reason,
        "metadata": json_text(Some(&t.metadata)),
        "attempts": t.attempts,
        "next_retry_at": t.next_retry_at.filter(|_| !t.status().is_final()).map(rfc3339),
        "last_error": t.last_error,
        "branches": branches.iter().map(branch).collect::<Vec<_>>(),
    })
}

/// The answer to a branch whose Try succeeded.
pub fn tried_branch(b: &BranchRow) -> Value {
    json!({
        "gid": b.gid,
        "branch_id": b.branch_id,
        "resource": b.resource,
        "status": b.status,
        "response": json_text(b.response.as_deref()),
    })
}
