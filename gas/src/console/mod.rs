//! Browser consoles (see docs/architecture.md): byte-level pieces.
pub(crate) mod frame;
pub(crate) mod rfb;
pub(crate) mod telnet;
