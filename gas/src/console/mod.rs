//! Browser consoles (see docs/architecture.md).
pub(crate) mod ssh;
