//! A device's endpoints (`RemoteEndpoint` rows of its `endpoints` property) as the console edits
//! them, and the checks an edit passes before it is written: a name, a known protocol, a host
//! the gateway can dial (a DNS name or an IP literal), a port in 1..65535, no duplicate name.

use serde::Deserialize;
use serde_json::{json, Value};

/// The protocols an endpoint may name (RAE's `RemoteEndpoint`).
pub const PROTOCOLS: [&str; 5] = ["SSH", "VNC", "TELNET", "HTTP", "TCP"];
const MAX_NAME: usize = 64;
const MAX_HOST: usize = 253;
const MAX_DESCRIPTION: usize = 1000;

/// One endpoint as shown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Endpoint {
    pub name: String,
    pub protocol: String,
    pub host: String,
    pub port: String,
    pub description: String,
    /// Kept as it was (the console does not edit it).
    pub provider_config: Option<Value>,
}

/// The add and edit forms' fields (kept to show them again after a refusal).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EndpointForm {
    #[serde(default)]
    pub original: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub port: String,
    #[serde(default)]
    pub description: String,
}

/// The rows of an `endpoints` value (rows that are not objects are skipped).
pub fn from_value(v: &Value) -> Vec<Endpoint> {
    let rows = v.get("rows").and_then(Value::as_array);
    rows.into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .map(|r| {
            let s = |k: &str| match r.get(k) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            Endpoint {
                name: s("name"),
                protocol: s("protocol"),
                host: s("host"),
                port: s("port"),
                description: s("description"),
                provider_config: r.get("providerConfig").filter(|v| !v.is_null()).cloned(),
            }
        })
        .collect()
}

/// The `endpoints` value of rows (the host knows the data shape).
pub fn to_value(rows: &[Endpoint]) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(|e| {
            let mut row = json!({
                "name": e.name, "protocol": e.protocol, "host": e.host,
                "port": e.port.parse::<i64>().unwrap_or(0),
            });
            if !e.description.is_empty() {
                row["description"] = json!(e.description);
            }
            if let Some(c) = &e.provider_config {
                row["providerConfig"] = c.clone();
            }
            row
        })
        .collect();
    json!({ "rows": rows })
}

/// Whether `host` is a DNS name (letters, digits, hyphens; dot-separated labels of 1..63) or an
/// IPv4 / IPv6 literal (brackets allowed around IPv6).
pub fn valid_host(host: &str) -> bool {
    if host.is_empty() || host.len() > MAX_HOST {
        return false;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    if host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return false; // looks like an IPv4 address but is not one
    }
    host.trim_end_matches('.').split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// Checks a submitted endpoint against the others (`editing` names the one it replaces).
pub fn validate(
    form: &EndpointForm,
    existing: &[Endpoint],
    editing: Option<&str>,
) -> Result<Endpoint, String> {
    let name = form.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(format!("name: 1 to {MAX_NAME} characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "name '{name}': letters, digits, '-', '_' and '.' only (it is typed in `thingport connect`)"
        ));
    }
    if existing
        .iter()
        .any(|e| e.name == name && Some(e.name.as_str()) != editing)
    {
        return Err(format!(
            "name '{name}' is taken: another endpoint of this device has it"
        ));
    }
    let protocol = form.protocol.trim().to_ascii_uppercase();
    if !PROTOCOLS.contains(&protocol.as_str()) {
        return Err(format!(
            "protocol '{}' is not one of {}",
            form.protocol.trim(),
            PROTOCOLS.join(", ")
        ));
    }
    let host = form.host.trim();
    if !valid_host(host) {
        return Err(format!(
            "host '{}' is not a host name or an IP address (as the gateway sees it, e.g. 127.0.0.1 or plc-7.local)",
            host.chars().take(80).collect::<String>()
        ));
    }
    let port = match form.port.trim().parse::<i64>() {
        Ok(p) if (1..=65_535).contains(&p) => p,
        Ok(p) => return Err(format!("port {p} is outside 1..65535")),
        Err(_) => {
            return Err(format!(
                "port '{}' is not a number in 1..65535",
                form.port.trim().chars().take(20).collect::<String>()
            ))
        }
    };
    let description = form.description.trim();
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(format!("description: at most {MAX_DESCRIPTION} characters"));
    }
    let provider_config = editing
        .and_then(|n| existing.iter().find(|e| e.name == n))
        .and_then(|e| e.provider_config.clone());
    Ok(Endpoint {
        name: name.to_string(),
        protocol,
        host: host.to_string(),
        port: port.to_string(),
        description: description.to_string(),
        provider_config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(name: &str, protocol: &str, host: &str, port: &str) -> EndpointForm {
        EndpointForm {
            name: name.into(),
            protocol: protocol.into(),
            host: host.into(),
            port: port.into(),
            ..Default::default()
        }
    }

    #[test]
    fn hosts_are_names_or_addresses() {
        for ok in [
            "127.0.0.1",
            "plc-7.local",
            "gateway",
            "::1",
            "[fe80::1]",
            "a.b-c.d.",
        ] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in [
            "",
            "300.1.1.1",
            "1.2.3",
            "a b",
            "-x.local",
            "x..y",
            "<img>",
            "http://x",
            "a:22",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
        assert!(!valid_host(&"a".repeat(254)));
    }

    #[test]
    fn a_valid_endpoint_is_normalised() {
        let e = validate(&form(" ssh ", "ssh", " 10.0.0.5 ", "22"), &[], None).unwrap();
        assert_eq!(
            (
                e.name.as_str(),
                e.protocol.as_str(),
                e.host.as_str(),
                e.port.as_str()
            ),
            ("ssh", "SSH", "10.0.0.5", "22")
        );
    }

    #[test]
    fn each_refusal_names_its_field() {
        let existing = vec![Endpoint {
            name: "ssh".into(),
            ..Default::default()
        }];
        let cases = [
            (form("", "SSH", "h", "22"), "name"),
            (form("a b", "SSH", "h", "22"), "name 'a b'"),
            (form("ssh", "SSH", "h", "22"), "is taken"),
            (form("vnc", "RDP", "h", "5900"), "protocol 'RDP'"),
            (form("vnc", "VNC", "bad host", "5900"), "host 'bad host'"),
            (form("vnc", "VNC", "h", "0"), "port 0 is outside"),
            (form("vnc", "VNC", "h", "70000"), "port 70000 is outside"),
            (form("vnc", "VNC", "h", "x"), "port 'x'"),
        ];
        for (f, expected) in cases {
            let e = validate(&f, &existing, None).unwrap_err();
            assert!(e.contains(expected), "{e} should contain {expected}");
        }
        // Editing keeps its own name.
        assert!(validate(&form("ssh", "SSH", "h", "22"), &existing, Some("ssh")).is_ok());
    }

    #[test]
    fn rows_round_trip_and_keep_provider_config() {
        let v = json!({"rows": [{"name": "ssh", "protocol": "SSH", "host": "h", "port": 22,
                                  "providerConfig": {"x": 1}}, "junk"]});
        let rows = from_value(&v);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].port, "22");
        let back = to_value(&rows);
        assert_eq!(back["rows"][0]["port"], json!(22));
        assert_eq!(back["rows"][0]["providerConfig"], json!({"x": 1}));
    }
}
