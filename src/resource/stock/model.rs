//! The stock service's typed values: counters and a validated branch payload.

use serde::{Deserialize, Serialize};

use crate::http::ApiError;
use crate::validate;

pub const MAX_ITEMS: usize = 100;
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

/// The three counters of a key, in either store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub available: i64,
    pub locked: i64,
    pub consumed: i64,
}

/// One reserved line of a branch payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub key: String,
    pub amount: i64,
}

#[derive(Deserialize)]
struct RawItem {
    key: String,
    amount: i64,
}

#[derive(Deserialize)]
struct RawPayload {
    items: Vec<RawItem>,
}

/// Parses `{"items": [{"key", "amount"}, ...]}`: 1..=100 items, distinct keys, amounts in
/// 1..=10^12. Items come back sorted by key, the order every store change takes them in (so
/// two branches never wait on each other's rows in opposite orders).
pub fn parse_items(payload: &serde_json::Value) -> Result<Vec<Item>, ApiError> {
    let raw: RawPayload = serde_path_to_error::deserialize(payload).map_err(|e| {
        let path = e.path().to_string();
        ApiError::invalid(format!("Field `payload.{path}`: {}.", e.into_inner()))
    })?;
    if raw.items.is_empty() || raw.items.len() > MAX_ITEMS {
        return Err(ApiError::invalid(format!(
            "Field `payload.items` must hold 1 to {MAX_ITEMS} items."
        )));
    }
    let mut items = Vec::with_capacity(raw.items.len());
    for (i, it) in raw.items.into_iter().enumerate() {
        validate::id(&format!("payload.items[{i}].key"), &it.key)?;
        validate::range(
            &format!("payload.items[{i}].amount"),
            it.amount,
            1,
            MAX_AMOUNT,
        )?;
        items.push(Item {
            key: it.key,
            amount: it.amount,
        });
    }
    items.sort_by(|a, b| a.key.cmp(&b.key));
    if let Some(w) = items.windows(2).find(|w| w[0].key == w[1].key) {
        return Err(ApiError::invalid(format!(
            "Field `payload.items` names key {} twice.",
            w[0].key
        )));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn valid_items_come_back_sorted() {
        let items =
            parse_items(&json!({"items": [{"key": "b", "amount": 2}, {"key": "a", "amount": 1}]}))
                .unwrap();
        assert_eq!(
            items[0],
            Item {
                key: "a".into(),
                amount: 1
            }
        );
        assert_eq!(items[1].key, "b");
    }

    #[test]
    fn bad_items_name_the_field() {
        let cases = [
            (json!({"items": []}), "payload.items"),
            (
                json!({"items": [{"key": "a", "amount": 0}]}),
                "payload.items[0].amount",
            ),
            (
                json!({"items": [{"key": "a", "amount": 1_000_000_000_001i64}]}),
                "amount",
            ),
            (
                json!({"items": [{"key": "a b", "amount": 1}]}),
                "payload.items[0].key",
            ),
            (
                json!({"items": [{"key": "a", "amount": 1}, {"key": "a", "amount": 2}]}),
                "twice",
            ),
            (json!({"items": [{"key": "a", "amount": "1"}]}), "amount"),
            (json!({}), "items"),
        ];
        for (payload, needle) in cases {
            let e = parse_items(&payload).unwrap_err();
            assert!(e.message.contains(needle), "{payload}: {}", e.message);
        }
        let many: Vec<_> = (0..101)
            .map(|i| json!({"key": format!("k{i}"), "amount": 1}))
            .collect();
        assert!(parse_items(&json!({ "items": many })).is_err());
    }
}
