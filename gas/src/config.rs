//! The relay's tunables. Defaults are the contract of `docs/architecture.md` (pings every 20 s, a
//! side silent for 60 s is dead, a lone side waits at most 60 s); tests shorten them.

use std::time::Duration;

/// How the relay treats its connections. Build with [`RelayConfig::default`] and override fields;
/// [`crate::Relay::new`] validates it.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The longest a side waits for the other side of its session (its grant's expiry may cut it
    /// shorter); then it is closed with 1008 "the other side did not attach".
    pub pairing_timeout: Duration,
    /// How often each side is pinged.
    pub ping_interval: Duration,
    /// A side from which nothing (not even a pong) arrived for this long is dead.
    pub idle_timeout: Duration,
    /// The time a connection gets for its TLS and WebSocket handshakes, together.
    pub handshake_timeout: Duration,
    /// At shutdown, how long live sessions may go on before they are closed with 1001.
    pub drain: Duration,
    /// How long a side gets to take our close frame (and the frames queued before it) and answer
    /// it before its connection is dropped.
    pub close_timeout: Duration,
    /// Binary messages queued from one side to the other (backpressure beyond that).
    pub queue: usize,
    /// The WebSocket read buffer per side (allocated up front).
    pub read_buffer_size: usize,
    /// The most bytes of request headers (names and values) an upgrade may carry.
    pub max_header_bytes: usize,
    /// Session events buffered for slow listeners of [`crate::Relay::events`] (older ones are
    /// dropped beyond that).
    pub event_buffer: usize,
    /// The most sessions (paired or waiting for a side) at once; a side of a new session beyond
    /// that is refused with 503 (its credential is not used up). Unlimited by default.
    pub max_sessions: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            pairing_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            queue: 8,
            read_buffer_size: 64 * 1024,
            max_header_bytes: 8 * 1024,
            event_buffer: 1024,
            max_sessions: usize::MAX,
        }
    }
}

/// A [`RelayConfig`] that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("the idle timeout ({idle:?}) must be longer than the ping interval ({ping:?})")]
    IdleNotAbovePing { idle: Duration, ping: Duration },
    #[error("max_header_bytes ({0}) cannot hold a tunnel credential")]
    HeadersTooSmall(usize),
}

impl RelayConfig {
    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let durations = [
            ("pairing_timeout", self.pairing_timeout),
            ("ping_interval", self.ping_interval),
            ("idle_timeout", self.idle_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("close_timeout", self.close_timeout),
        ];
        for (name, d) in durations {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        for (name, n) in [
            ("queue", self.queue),
            ("read_buffer_size", self.read_buffer_size),
            ("event_buffer", self.event_buffer),
            ("max_sessions", self.max_sessions),
        ] {
            if n == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.idle_timeout <= self.ping_interval {
            return Err(ConfigError::IdleNotAbovePing {
                idle: self.idle_timeout,
                ping: self.ping_interval,
            });
        }
        if self.max_header_bytes < thingport_protocol::tunnel::MAX_CREDENTIAL + 1024 {
            return Err(ConfigError::HeadersTooSmall(self.max_header_bytes));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_nonsense_is_named() {
        assert_eq!(RelayConfig::default().validate(), Ok(()));
        let c = RelayConfig {
            queue: 0,
            ..RelayConfig::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::Zero("queue")));
        let c = RelayConfig {
            idle_timeout: Duration::from_secs(5),
            ..RelayConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::IdleNotAbovePing { .. })
        ));
        let c = RelayConfig {
            max_header_bytes: 100,
            ..RelayConfig::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::HeadersTooSmall(100)));
    }
}
