//! Input rules from API.md, checked once at the edge so the rest of the code gets typed values.

use crate::http::ApiError;

pub const MAX_ID_LEN: usize = 128;
pub const MAX_RESOURCE_NAME_LEN: usize = 64;

/// `gid`, `branch_id`, stock `key`: `[A-Za-z0-9._:-]{1,128}`.
pub fn id(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > MAX_ID_LEN {
        return Err(ApiError::invalid(format!(
            "Field `{field}` must be 1 to {MAX_ID_LEN} characters long."
        )));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    {
        return Err(ApiError::invalid(format!(
            "Field `{field}` may only contain letters, digits, '.', '_', ':' and '-'."
        )));
    }
    Ok(())
}

/// Resource names: `[a-z0-9_-]{1,64}`.
pub fn resource_name(field: &str, value: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_RESOURCE_NAME_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "Field `{field}` must match [a-z0-9_-]{{1,{MAX_RESOURCE_NAME_LEN}}}."
        )))
    }
}

/// An absolute http or https URL with a host.
pub fn http_url(field: &str, value: &str) -> Result<(), ApiError> {
    let bad = || {
        ApiError::invalid(format!(
            "Field `{field}` must be an absolute http:// or https:// URL."
        ))
    };
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or_else(bad)?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty()
        || value.len() > 2048
        || value.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad());
    }
    reqwest::Url::parse(value).map_err(|_| bad())?;
    Ok(())
}

/// An integer within an inclusive range.
pub fn range(field: &str, value: i64, min: i64, max: i64) -> Result<(), ApiError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "Field `{field}` must be between {min} and {max}."
        )))
    }
}

/// A prefix for the Redis namespaces and Postgres database names a tool makes:
/// `[a-z0-9_]{1,40}`, not starting with a digit (so it is a valid SQL identifier).
pub fn namespace_prefix(flag: &str, p: &str) -> Result<(), String> {
    let ok = !p.is_empty()
        && p.len() <= 40
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !p.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{flag} {p:?} must be 1 to 40 characters of [a-z0-9_], not starting with a digit"
        ))
    }
}

/// A `postgres://` (or `postgresql://`) URL; the error shows it with its password hidden.
pub fn postgres_url(flag: &str, url: &str) -> Result<(), String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(())
    } else {
        Err(format!(
            "{flag} must be a postgres:// URL, not {}",
            crate::demo::redact(url)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(id("gid", "order-1:a.b_c").is_ok());
        assert!(id("gid", "").is_err());
        assert!(id("gid", "a b").is_err());
        assert!(id("gid", &"x".repeat(128)).is_ok());
        assert!(id("gid", &"x".repeat(129)).is_err());
        assert!(id("gid", "é").is_err());
    }

    #[test]
    fn resource_names() {
        assert!(resource_name("name", "inventory_2-a").is_ok());
        assert!(resource_name("name", "Inventory").is_err());
        assert!(resource_name("name", "a.b").is_err());
        assert!(resource_name("name", &"a".repeat(65)).is_err());
    }

    #[test]
    fn urls() {
        assert!(http_url("u", "http://127.0.0.1:8081/tcc/try").is_ok());
        assert!(http_url("u", "https://svc.example/tcc").is_ok());
        assert!(http_url("u", "ftp://host/x").is_err());
        assert!(http_url("u", "http://").is_err());
        assert!(http_url("u", "/relative").is_err());
        assert!(http_url("u", "http://a b/").is_err());
    }

    #[test]
    fn prefixes_and_postgres_urls() {
        assert!(namespace_prefix("--p", "demo_1").is_ok());
        for bad in ["", "Demo", "1demo", "a-b", &"a".repeat(41)] {
            assert!(namespace_prefix("--p", bad).is_err(), "{bad:?}");
        }
        assert!(postgres_url("--pg-url", "postgresql://u@h/db").is_ok());
        let e = postgres_url("--pg-url", "mysql://u:secret@h/db").unwrap_err();
        assert!(e.contains("--pg-url") && !e.contains("secret"), "{e}");
    }

    #[test]
    fn ranges() {
        assert!(range("timeout_ms", 100, 100, 86_400_000).is_ok());
        assert!(range("timeout_ms", 99, 100, 86_400_000).is_err());
        let e = range("timeout_ms", -1, 100, 86_400_000).unwrap_err();
        assert!(e.message.contains("timeout_ms"));
    }
}
