//! JSON shapes of the coordinator's answers (API.md §1), serialised straight from the rows:
//! stored JSON text (metadata, payloads, responses) is embedded as it is, not parsed into a tree
//! and written out again.

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use super::store::{BranchRow, ResourceRow, TxRow};
use crate::time::rfc3339;

/// Stored JSON text, embedded as it is; `null` when absent or not JSON.
pub struct Json<'a>(pub Option<&'a str>);

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self
            .0
            .and_then(|t| serde_json::from_str::<&RawValue>(t).ok())
        {
            Some(raw) => raw.serialize(s),
            None => s.serialize_unit(),
        }
    }
}

#[derive(Serialize)]
pub struct ResourceView<'a> {
    name: &'a str,
    try_url: &'a str,
    confirm_url: &'a str,
    cancel_url: &'a str,
    created_at: String,
    updated_at: String,
}

pub fn resource(r: &ResourceRow) -> ResourceView<'_> {
    ResourceView {
        name: &r.name,
        try_url: &r.try_url,
        confirm_url: &r.confirm_url,
        cancel_url: &r.cancel_url,
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
    }
}

#[derive(Serialize)]
pub struct BranchView<'a> {
    branch_id: &'a str,
    resource: &'a str,
    status: &'a str,
    payload: Json<'a>,
    response: Json<'a>,
    attempts: i64,
    last_error: Option<&'a str>,
    updated_at: String,
}

pub fn branch(b: &BranchRow) -> BranchView<'_> {
    BranchView {
        branch_id: &b.branch_id,
        resource: &b.resource,
        status: &b.status,
        payload: Json(Some(&b.payload)),
        response: Json(b.response.as_deref()),
        attempts: b.attempts,
        last_error: b.last_error.as_deref(),
        updated_at: rfc3339(b.updated_at),
    }
}

#[derive(Serialize)]
pub struct TxView<'a> {
    gid: &'a str,
    status: &'a str,
    created_at: String,
    updated_at: String,
    expires_at: String,
    finished_at: Option<String>,
    reason: Option<&'a str>,
    metadata: Json<'a>,
    attempts: i64,
    next_retry_at: Option<String>,
    last_error: Option<&'a str>,
    branches: Vec<BranchView<'a>>,
}

pub fn transaction<'a>(t: &'a TxRow, branches: &'a [BranchRow]) -> TxView<'a> {
    TxView {
        gid: &t.gid,
        status: &t.status,
        created_at: rfc3339(t.created_at),
        updated_at: rfc3339(t.updated_at),
        expires_at: rfc3339(t.expires_at),
        finished_at: t.finished_at.map(rfc3339),
        reason: t.reason.as_deref(),
        metadata: Json(Some(&t.metadata)),
        attempts: t.attempts,
        next_retry_at: t
            .next_retry_at
            .filter(|_| !t.status().is_final())
            .map(rfc3339),
        last_error: t.last_error.as_deref(),
        branches: branches.iter().map(branch).collect(),
    }
}

#[derive(Serialize)]
pub struct TriedView<'a> {
    gid: &'a str,
    branch_id: &'a str,
    resource: &'a str,
    status: &'a str,
    response: Json<'a>,
}

/// The answer to a branch whose Try succeeded.
pub fn tried_branch(b: &BranchRow) -> TriedView<'_> {
    TriedView {
        gid: &b.gid,
        branch_id: &b.branch_id,
        resource: &b.resource,
        status: &b.status,
        response: Json(b.response.as_deref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stored_json_is_embedded_and_bad_text_is_null() {
        let v = |text: Option<&str>| serde_json::to_value(Json(text)).unwrap();
        assert_eq!(v(Some(r#"{"a":[1,2]}"#)), json!({"a": [1, 2]}));
        assert_eq!(v(Some("not json")), json!(null));
        assert_eq!(v(None), json!(null));
    }
}
