//! The per-side tunnel credentials (SPEC §6): one for the client and one for the agent, signed
//! with the GAS's key, bound to one session, role and GAS, single-use (a fresh nonce each) and
//! short-lived ([`GRANT_LIFETIME_MS`](super::GRANT_LIFETIME_MS)).

use super::*;

impl Engine {
    /// A credential for `role` in session `session` at GAS `gas`, valid until `expires` (ms).
    pub(super) fn credential(
        &self,
        session: &str,
        role: Role,
        gas: &str,
        expires: i64,
        key: &[u8],
    ) -> Result<String, Error> {
        Ok(tunnel::sign(
            &Grant {
                session: session.to_string(),
                role,
                gas: gas.to_string(),
                exp: expires,
                nonce: self.random_hex(16)?,
            },
            key,
        ))
    }
}
