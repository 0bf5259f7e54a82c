//! Entity and property name rules.
//!
//! Names travel in URL paths, log lines and SQL parameters, so the accepted alphabet is small and
//! explicit: a name that could be a path separator, a quote or a control character is refused
//! before it reaches any of them.

use crate::error::ApiError;

/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Checks an entity, property, service or parameter name.
pub fn validate(what: &str, name: &str) -> Result<(), ApiError> {
    if let Some(reason) = problem(name) {
        return Err(ApiError::bad_request(format!(
            "invalid {what} name '{}': {reason}",
            printable(name)
        )));
    }
    Ok(())
}

/// Whether `name` is acceptable, without building an error.
pub fn is_valid(name: &str) -> bool {
    problem(name).is_none()
}

fn problem(name: &str) -> Option<&'static str> {
    let Some(first) = name.chars().next() else {
        return Some("must not be empty");
    };
    if name.len() > MAX_NAME_LEN {
        return Some("longer than 128 characters");
    }
    if !(first.is_ascii_alphanumeric() || first == '_') {
        return Some("must start with a letter, a digit or '_'");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | ':'))
    {
        return Some("only letters, digits and _ - . @ : are allowed");
    }
    None
}

/// A bounded, control-character-free rendering of untrusted text for error messages.
pub fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in ["Gateway-1", "plc_7", "a.b:c@d", "_x", "9lives"] {
            assert!(is_valid(n), "{n}");
        }
    }

    #[test]
    fn refuses_hostile_names() {
        let long = "a".repeat(129);
        for n in [
            "",
            "../x",
            "a/b",
            "a\\b",
            "x'; DROP TABLE t;--",
            "\"q\"",
            " a",
            "a b",
            "-a",
            &long,
            "a\nb",
        ] {
            assert!(!is_valid(n), "{n:?}");
        }
    }

    #[test]
    fn printable_strips_controls_and_bounds_length() {
        assert_eq!(printable("a\nb"), "a?b");
        assert_eq!(printable(&"x".repeat(100)).chars().count(), 65);
    }
}
