//! Browser consoles (SPEC §11): which endpoints have one, the credentials stored per endpoint,
//! the Ed25519 key pairs the platform generates, and what a GAS receives for a console session.
//!
//! Credentials live in the record collection [`SECRETS`] (key `<thing>/<endpoint>`), apart from
//! the `endpoints` property (which the device's agent reads). Passwords, private keys and
//! passphrases are sealed by the host with its secrets key (`Host::secret_seal`, bound to the
//! Thing, the endpoint and the field), so neither a copy of the database nor a record moved to
//! another endpoint gives them away. They are write-only through the API: reads answer
//! `passwordSet: true`. Only the GAS holding a console session receives them, once
//! ([`crate::engine::Engine::claim_console`]).

use crate::model::{now_ms, RemoteEndpoint};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thingport_sdk::protocol::Caller;
use thingport_sdk::{Error, Host};
use zeroize::Zeroizing;

/// The record collection of endpoint credentials (key: `<thing>/<endpoint>`).
pub const SECRETS: &str = "endpoint-secrets";
/// The protocols a browser console speaks.
pub const CONSOLE_PROTOCOLS: [&str; 3] = ["VNC", "SSH", "TELNET"];
/// The ways of authenticating to an endpoint.
pub const AUTHENTICATIONS: [&str; 4] = ["none", "password", "userPassword", "privateKey"];
const MAX_USERNAME: usize = 128;
const MAX_PASSWORD: usize = 1024;
const MAX_PRIVATE_KEY: usize = 16 * 1024;
const MAX_HOST_KEY: usize = 8 * 1024;

/// The console protocol of an endpoint, or why it has none.
pub fn protocol_of(thing: &str, endpoint: &RemoteEndpoint) -> Result<&'static str, Error> {
    let declared = endpoint
        .protocol
        .as_deref()
        .unwrap_or("")
        .to_ascii_uppercase();
    CONSOLE_PROTOCOLS
        .into_iter()
        .find(|p| *p == declared)
        .ok_or_else(|| {
            Error::unprocessable(format!(
                "endpoint '{}' of Thing '{thing}' is {}: browser consoles speak VNC, SSH and TELNET (use StartSession and a client for other protocols)",
                endpoint.name,
                if declared.is_empty() { "of no declared protocol".to_string() } else { declared }
            ))
        })
}

/// The GAS's console WebSocket URL from its base URL (`http` → `ws`, `https` → `wss`).
pub fn console_url(gas_url: &str) -> String {
    let base = gas_url.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    format!("{base}{}", thingport_protocol::tunnel::CONSOLE_PATH)
}

/// What is stored per endpoint (sealed fields hold the host's sealed form).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    authentication: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    private_key: Option<String>,
    #[serde(default)]
    passphrase: Option<String>,
    #[serde(default)]
    host_key: Option<String>,
    /// The public half of a key pair the platform generated (for `authorized_keys`).
    #[serde(default)]
    public_key: Option<String>,
    /// Where the endpoint pointed (`PROTOCOL host:port`) when its secrets were entered: they are
    /// released only while it still does, so moving an endpoint cannot redirect its secrets.
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    updated_by: String,
    #[serde(default)]
    updated_time: i64,
}

/// `SetEndpointCredentials`' parameters. A field left out keeps its stored value; an empty
/// string removes it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetCredentialsInput {
    /// The endpoint's name on the Thing.
    pub endpoint: String,
    /// none, password (VNC), userPassword (SSH, Telnet) or privateKey (SSH).
    pub authentication: Option<String>,
    /// The user to log in as (SSH).
    pub username: Option<String>,
    /// The password (write-only).
    pub password: Option<String>,
    /// An SSH private key, OpenSSH or PEM (RSA, ECDSA, Ed25519) (write-only).
    pub private_key: Option<String>,
    /// The private key's passphrase, if it has one (write-only).
    pub passphrase: Option<String>,
    /// The SSH server's public host key to pin, as an OpenSSH line (`ssh-ed25519 AAAA...`).
    pub host_key: Option<String>,
}

/// `GenerateEndpointKeyPair`'s parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenerateInput {
    /// The endpoint's name on the Thing.
    pub endpoint: String,
    /// The user to log in as (kept if left out).
    pub username: Option<String>,
}

/// An endpoint's name (`GetEndpointCredentials`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointInput {
    /// The endpoint's name on the Thing.
    pub endpoint: String,
}

/// What reads answer: never a secret, only whether one is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsView {
    pub endpoint: String,
    pub authentication: String,
    pub username: Option<String>,
    pub password_set: bool,
    pub private_key_set: bool,
    pub passphrase_set: bool,
    /// The pinned SSH host key.
    pub host_key: Option<String>,
    /// Its SHA-256 fingerprint, as `ssh-keygen -l` prints it.
    pub host_key_fingerprint: Option<String>,
    /// The public half of a key pair the platform generated, for the device's `authorized_keys`.
    pub public_key: Option<String>,
    pub updated_by: Option<String>,
    #[schemars(extend("x-thingport-base-type" = "DATETIME"))]
    pub updated_time: Option<i64>,
}

/// The credentials a console uses, in clear (for the GAS that holds the session only).
#[derive(Default)]
pub struct Opened {
    pub authentication: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub private_key: Option<String>,
    pub passphrase: Option<String>,
    pub host_key: Option<String>,
}

fn key(thing: &str, endpoint: &str) -> String {
    format!("{thing}/{endpoint}")
}

fn context(thing: &str, endpoint: &str, field: &str) -> String {
    format!("{SECRETS}/{thing}/{endpoint}/{field}")
}

fn load(host: &Host, thing: &str, endpoint: &str) -> Result<Option<Stored>, Error> {
    match host.record_get(SECRETS, &key(thing, endpoint))? {
        None => Ok(None),
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| Error::internal(format!("a stored credential record is unreadable: {e}"))),
    }
}

fn require(host: &Host, caller: &Caller, thing: &str, perm: &str) -> Result<(), Error> {
    if caller.admin || host.check_permission(&caller.name, "Things", thing, perm, "endpoints")? {
        Ok(())
    } else {
        Err(Error::forbidden(format!(
            "Not authorized for {perm} on endpoints in {thing}"
        )))
    }
}

fn find_endpoint(host: &Host, thing: &str, name: &str) -> Result<RemoteEndpoint, Error> {
    let value = host.get_property(thing, "endpoints")?;
    let rows = value
        .get("rows")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    rows.into_iter()
        .filter_map(|r| serde_json::from_value::<RemoteEndpoint>(r).ok())
        .find(|e| e.name == name)
        .ok_or_else(|| {
            Error::not_found(format!(
                "Thing '{thing}' has no endpoint '{}'",
                crate::engine::clip(name)
            ))
        })
}

/// The SHA-256 fingerprint of an OpenSSH public key line (`SHA256:<base64, no padding>`), after
/// checking the line is one: a known key type, and a key blob that names the same type.
pub fn fingerprint(line: &str) -> Result<String, Error> {
    let bad =
        |why: &str| Error::unprocessable(format!("hostKey is not an OpenSSH public key: {why}"));
    let mut parts = line.split_whitespace();
    let kind = parts.next().ok_or_else(|| bad("it is empty"))?;
    let known = [
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    if !known.contains(&kind) {
        return Err(bad(&format!(
            "'{}' is not a key type (expected one of {})",
            crate::engine::clip(kind),
            known.join(", ")
        )));
    }
    let blob = parts
        .next()
        .and_then(|b| STANDARD.decode(b).ok())
        .ok_or_else(|| bad("the key after the type is not base64"))?;
    let named = blob
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .and_then(|n| blob.get(4..4 + n));
    if named != Some(kind.as_bytes()) {
        return Err(bad("the key blob does not match its type"));
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &blob);
    Ok(format!(
        "SHA256:{}",
        STANDARD_NO_PAD.encode(digest.as_ref())
    ))
}

/// What an endpoint points at: `PROTOCOL host:port`.
fn target_of(e: &RemoteEndpoint) -> String {
    format!(
        "{} {}:{}",
        e.protocol.as_deref().unwrap_or("").to_ascii_uppercase(),
        e.host.as_deref().unwrap_or("").trim(),
        e.port.unwrap_or(0)
    )
}

impl Stored {
    fn has_secrets(&self) -> bool {
        self.password.is_some() || self.private_key.is_some() || self.passphrase.is_some()
    }

    /// Removes the secrets (they were entered for another target or another host key).
    fn forget_secrets(&mut self, why: &str, changes: &mut Vec<String>) {
        if self.has_secrets() {
            self.password = None;
            self.private_key = None;
            self.passphrase = None;
            self.public_key = None;
            changes.push(format!(
                "password and keys removed ({why}): enter them again"
            ));
        }
    }
}

fn check_username(u: &str) -> Result<(), Error> {
    check_text("username", u, MAX_USERNAME)?;
    if u.chars().any(|c| c.is_control()) {
        return Err(Error::unprocessable(
            "username contains a control character",
        ));
    }
    Ok(())
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), Error> {
    if value.len() > max {
        return Err(Error::unprocessable(format!(
            "{field} is {} bytes; at most {max}",
            value.len()
        )));
    }
    if value.contains('\0') {
        return Err(Error::unprocessable(format!("{field} contains a NUL byte")));
    }
    Ok(())
}

fn check_private_key(pem: &str) -> Result<(), Error> {
    check_text("privateKey", pem, MAX_PRIVATE_KEY)?;
    let t = pem.trim();
    if !(t.starts_with("-----BEGIN ") && t.contains("PRIVATE KEY-----") && t.ends_with("-----")) {
        return Err(Error::unprocessable(
            "privateKey must be a PEM or OpenSSH private key (-----BEGIN ... PRIVATE KEY-----)",
        ));
    }
    Ok(())
}

impl Stored {
    fn view(&self, endpoint: &str) -> CredentialsView {
        CredentialsView {
            endpoint: endpoint.to_string(),
            authentication: self.authentication.clone(),
            username: self.username.clone(),
            password_set: self.password.is_some(),
            private_key_set: self.private_key.is_some(),
            passphrase_set: self.passphrase.is_some(),
            host_key: self.host_key.clone(),
            host_key_fingerprint: self.host_key.as_deref().and_then(|k| fingerprint(k).ok()),
            public_key: self.public_key.clone(),
            updated_by: Some(self.updated_by.clone()).filter(|s| !s.is_empty()),
            updated_time: Some(self.updated_time).filter(|t| *t > 0),
        }
    }

    /// What a consistent set needs, for the chosen authentication.
    fn check_complete(&self) -> Result<(), Error> {
        let missing = |what: &str| {
            Err(Error::unprocessable(format!(
                "authentication {} needs {what}",
                self.authentication
            )))
        };
        match self.authentication.as_str() {
            "password" if self.password.is_none() => missing("a password"),
            "userPassword" if self.username.is_none() || self.password.is_none() => {
                missing("a username and a password")
            }
            "privateKey" if self.username.is_none() || self.private_key.is_none() => {
                missing("a username and a private key")
            }
            _ => Ok(()),
        }
    }
}

/// `GetEndpointCredentials`: what is stored, without the secrets.
pub fn get(
    host: &Host,
    caller: &Caller,
    thing: &str,
    endpoint: &str,
) -> Result<CredentialsView, Error> {
    require(host, caller, thing, "PropertyRead")?;
    find_endpoint(host, thing, endpoint)?;
    Ok(load(host, thing, endpoint)?
        .unwrap_or_else(|| Stored {
            authentication: "none".into(),
            ..Default::default()
        })
        .view(endpoint))
}

/// `SetEndpointCredentials`: merges, validates, seals, writes and audits (in one record write).
pub fn set(
    host: &Host,
    caller: &Caller,
    thing: &str,
    input: SetCredentialsInput,
) -> Result<CredentialsView, Error> {
    require(host, caller, thing, "PropertyWrite")?;
    let endpoint = input.endpoint.clone();
    let target = target_of(&find_endpoint(host, thing, &endpoint)?);
    let mut stored = load(host, thing, &endpoint)?.unwrap_or_else(|| Stored {
        authentication: "none".into(),
        ..Default::default()
    });
    let mut changes: Vec<String> = Vec::new();
    // Secrets entered for another target are not carried over to this one.
    if stored.target.as_deref().is_some_and(|t| t != target) {
        stored.forget_secrets(
            &format!("the endpoint now points to {target}"),
            &mut changes,
        );
    }
    if let Some(a) = &input.authentication {
        if !AUTHENTICATIONS.contains(&a.as_str()) {
            return Err(Error::unprocessable(format!(
                "authentication '{}' is not one of {}",
                crate::engine::clip(a),
                AUTHENTICATIONS.join(", ")
            )));
        }
        if *a != stored.authentication {
            changes.push(format!("authentication {a}"));
        }
        stored.authentication = a.clone();
    }
    if let Some(u) = &input.username {
        check_username(u)?;
        let u = Some(u.trim().to_string()).filter(|u| !u.is_empty());
        if u != stored.username {
            changes.push(match &u {
                Some(u) => format!("username {u}"),
                None => "username removed".into(),
            });
        }
        stored.username = u;
    }
    for (field, value, max) in [
        ("password", &input.password, MAX_PASSWORD),
        ("privateKey", &input.private_key, MAX_PRIVATE_KEY),
        ("passphrase", &input.passphrase, MAX_PASSWORD),
    ] {
        let Some(value) = value else { continue };
        let slot = match field {
            "password" => &mut stored.password,
            "privateKey" => &mut stored.private_key,
            _ => &mut stored.passphrase,
        };
        if value.is_empty() {
            if slot.take().is_some() {
                changes.push(format!("{field} removed"));
            }
            continue;
        }
        if field == "privateKey" {
            check_private_key(value)?;
        } else {
            check_text(field, value, max)?;
        }
        *slot = Some(host.secret_seal(&context(thing, &endpoint, field), value)?);
        changes.push(format!("{field} set"));
        if field == "privateKey" {
            // A key pasted by hand: its public half is not known here.
            stored.public_key = None;
        }
    }
    if let Some(k) = &input.host_key {
        let k = k.trim();
        if k.is_empty() {
            if stored.host_key.take().is_some() {
                changes.push("host key unpinned".into());
            }
        } else {
            check_text("hostKey", k, MAX_HOST_KEY)?;
            let fp = fingerprint(k)?;
            // Kept without its comment: the key is what is pinned.
            let line = k.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
            if stored.host_key.as_deref() != Some(line.as_str()) {
                // Another key than the pinned one: the secrets were entered for the device that
                // had the old key; they are not handed to this one unless entered again here.
                if stored.host_key.is_some() {
                    let entered = [&input.password, &input.private_key, &input.passphrase]
                        .iter()
                        .any(|v| v.as_deref().is_some_and(|v| !v.is_empty()));
                    if !entered {
                        stored.forget_secrets("the pinned host key changed", &mut changes);
                    }
                }
                changes.push(format!("host key pinned {fp}"));
            }
            stored.host_key = Some(line);
        }
    }
    if let Err(e) = stored.check_complete() {
        let removed = changes
            .iter()
            .find(|c| c.starts_with("password and keys removed"));
        return Err(match removed {
            Some(why) => Error::unprocessable(format!("{}: {why}", e.message())),
            None => e,
        });
    }
    stored.target = stored.has_secrets().then_some(target);
    write(host, caller, thing, &endpoint, stored, &changes)
}

fn write(
    host: &Host,
    caller: &Caller,
    thing: &str,
    endpoint: &str,
    mut stored: Stored,
    changes: &[String],
) -> Result<CredentialsView, Error> {
    if changes.is_empty() {
        return Ok(stored.view(endpoint));
    }
    stored.updated_by = caller.name.clone();
    stored.updated_time = now_ms();
    let value = serde_json::to_value(&stored)
        .map_err(|e| Error::internal(format!("credentials not encodable: {e}")))?;
    let message = format!(
        "credentials of endpoint {endpoint} changed by {} from {}: {}",
        caller.name,
        caller.source_ip,
        changes.join(", ")
    );
    host.record_put(
        SECRETS,
        &key(thing, endpoint),
        value,
        Some((crate::engine::AUDIT, thing, &message)),
    )?;
    Ok(stored.view(endpoint))
}

/// `GenerateEndpointKeyPair`: a new Ed25519 key pair whose private half never leaves the
/// platform (it is sealed at once and only a console's GAS receives it); the answer carries
/// the public half for the device's `authorized_keys`.
pub fn generate(
    host: &Host,
    caller: &Caller,
    thing: &str,
    input: GenerateInput,
) -> Result<CredentialsView, Error> {
    require(host, caller, thing, "PropertyWrite")?;
    let target = target_of(&find_endpoint(host, thing, &input.endpoint)?);
    let mut stored = load(host, thing, &input.endpoint)?.unwrap_or_default();
    let mut changes = Vec::new();
    if stored.target.as_deref().is_some_and(|t| t != target) {
        stored.forget_secrets(
            &format!("the endpoint now points to {target}"),
            &mut changes,
        );
    }
    if let Some(u) = &input.username {
        check_username(u)?;
        stored.username = Some(u.trim().to_string()).filter(|u| !u.is_empty());
    }
    if stored.username.is_none() {
        return Err(Error::unprocessable(
            "a generated key needs the username it logs in as",
        ));
    }
    let comment = format!("thingport:{thing}/{}", input.endpoint);
    let (private_pem, public_line) = ed25519_pair(&comment)?;
    stored.private_key =
        Some(host.secret_seal(&context(thing, &input.endpoint, "privateKey"), &private_pem)?);
    let had_passphrase = stored.passphrase.take().is_some();
    stored.public_key = Some(public_line.clone());
    stored.authentication = "privateKey".into();
    let fp = fingerprint(&public_line)?;
    changes.push(format!(
        "a new Ed25519 key pair generated ({fp}); authentication privateKey"
    ));
    // A password stays stored but is no longer for this target's key login; it is released only
    // with authentication userPassword, for the same target.
    stored.target = Some(target);
    if had_passphrase {
        changes.push("passphrase removed (the new key has none)".into());
    }
    write(host, caller, thing, &input.endpoint, stored, &changes)
}

/// The credentials in clear for a console of this endpoint: only what its authentication uses
/// (nothing for Telnet, which has no login protocol), and only while the endpoint points where
/// they were entered for.
pub fn open(host: &Host, thing: &str, endpoint: &RemoteEndpoint) -> Result<Opened, Error> {
    let name = endpoint.name.as_str();
    let Some(stored) = load(host, thing, name)? else {
        return Ok(Opened {
            authentication: "none".into(),
            ..Default::default()
        });
    };
    let target = target_of(endpoint);
    if stored.has_secrets() && stored.target.as_deref().is_some_and(|t| t != target) {
        return Err(Error::conflict(format!(
            "endpoint '{name}' of Thing '{thing}' now points to {target}, not where its password or key was entered for: enter them again"
        )));
    }
    let unseal = |field: &str, v: &Option<String>| -> Result<Option<String>, Error> {
        v.as_deref()
            .map(|s| host.secret_seal_open(&context(thing, name, field), s))
            .transpose()
    };
    let telnet = endpoint
        .protocol
        .as_deref()
        .is_some_and(|p| p.eq_ignore_ascii_case("TELNET"));
    let method = if telnet {
        "none"
    } else {
        stored.authentication.as_str()
    };
    let (password, key) = match method {
        "password" | "userPassword" => (true, false),
        "privateKey" => (false, true),
        _ => (false, false),
    };
    Ok(Opened {
        password: if password {
            unseal("password", &stored.password)?
        } else {
            None
        },
        private_key: if key {
            unseal("privateKey", &stored.private_key)?
        } else {
            None
        },
        passphrase: if key {
            unseal("passphrase", &stored.passphrase)?
        } else {
            None
        },
        username: (method != "none")
            .then(|| stored.username.clone())
            .flatten(),
        authentication: method.to_string(),
        host_key: stored.host_key,
    })
}

trait OpenSecret {
    fn secret_seal_open(&self, context: &str, sealed: &str) -> Result<String, Error>;
}

impl OpenSecret for Host {
    fn secret_seal_open(&self, context: &str, sealed: &str) -> Result<String, Error> {
        self.secret_open(context, sealed).map_err(|e| {
            Error::unprocessable(format!(
                "a stored credential cannot be read ({}): set it again",
                e.message()
            ))
        })
    }
}

/// A new Ed25519 key pair: the private key in OpenSSH format (unencrypted: it is sealed by the
/// host before it is stored) and the public key as an OpenSSH line with `comment`.
fn ed25519_pair(comment: &str) -> Result<(String, String), Error> {
    use ring::rand::{SecureRandom, SystemRandom};
    use ring::signature::KeyPair as _;
    let rng = SystemRandom::new();
    let mut seed = Zeroizing::new([0u8; 32]);
    rng.fill(&mut *seed)
        .map_err(|_| Error::internal("the system random generator failed"))?;
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&*seed)
        .map_err(|_| Error::internal("Ed25519 key generation failed"))?;
    let public = pair.public_key().as_ref().to_vec();
    let mut check = [0u8; 4];
    rng.fill(&mut check)
        .map_err(|_| Error::internal("the system random generator failed"))?;
    Ok(openssh_ed25519(&seed, &public, check, comment))
}

/// The OpenSSH encodings (PROTOCOL.key) of an Ed25519 key: `(private PEM, public line)`.
fn openssh_ed25519(
    seed: &[u8; 32],
    public: &[u8],
    check: [u8; 4],
    comment: &str,
) -> (String, String) {
    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s);
    }
    let mut public_blob = Vec::new();
    string(&mut public_blob, b"ssh-ed25519");
    string(&mut public_blob, public);
    let mut private = Zeroizing::new(Vec::new());
    private.extend_from_slice(&check);
    private.extend_from_slice(&check);
    string(&mut private, b"ssh-ed25519");
    string(&mut private, public);
    let mut secret = Zeroizing::new(seed.to_vec());
    secret.extend_from_slice(public);
    string(&mut private, &secret);
    string(&mut private, comment.as_bytes());
    let mut pad = 1u8;
    while !private.len().is_multiple_of(8) {
        private.push(pad);
        pad += 1;
    }
    let mut body = Zeroizing::new(b"openssh-key-v1\0".to_vec());
    string(&mut body, b"none");
    string(&mut body, b"none");
    string(&mut body, b"");
    body.extend_from_slice(&1u32.to_be_bytes());
    string(&mut body, &public_blob);
    string(&mut body, &private);
    let b64 = Zeroizing::new(STANDARD.encode(&*body));
    let mut pem = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(70) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    let line = format!("ssh-ed25519 {} {comment}", STANDARD.encode(&public_blob));
    (pem, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_urls_and_protocols() {
        assert_eq!(console_url("http://g:1/"), "ws://g:1/console");
        assert_eq!(console_url("https://g"), "wss://g/console");
        let ep = |p: Option<&str>| RemoteEndpoint {
            name: "e".into(),
            protocol: p.map(String::from),
            host: Some("h".into()),
            port: Some(1),
            description: None,
            provider_config: None,
        };
        assert_eq!(protocol_of("T", &ep(Some("ssh"))).unwrap(), "SSH");
        assert_eq!(protocol_of("T", &ep(Some("VNC"))).unwrap(), "VNC");
        let e = protocol_of("T", &ep(Some("HTTP"))).unwrap_err();
        assert!(e.message().contains("is HTTP"), "{}", e.message());
        assert!(protocol_of("T", &ep(None)).is_err());
    }

    #[test]
    fn fingerprints_match_ssh_keygen_and_bad_keys_are_named() {
        // `ssh-keygen -lf` of this key prints SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU.
        let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host";
        assert_eq!(
            fingerprint(line).unwrap(),
            "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU"
        );
        for bad in [
            "",
            "ssh-dss AAAA",
            "ssh-ed25519 !!!",
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
        ] {
            assert!(fingerprint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_keys_are_openssh_encoded() {
        let (pem, line) = ed25519_pair("thingport:T/ssh").unwrap();
        assert!(pem.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        assert!(pem.ends_with("-----END OPENSSH PRIVATE KEY-----\n"));
        assert!(line.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"));
        assert!(line.ends_with(" thingport:T/ssh"));
        fingerprint(&line).unwrap();
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let body = STANDARD.decode(b64).unwrap();
        assert!(body.starts_with(b"openssh-key-v1\0"));
    }
}
