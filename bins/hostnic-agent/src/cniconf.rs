//! The readiness-gated conflist and the plugin install: its content is the
//! core's (`hostnic_core::config::conflist`), its files the store adapter's
//! (`hostnic_store::cni`).

pub use hostnic_core::config::conflist::{CONFLIST_NAME, MOVED_ASIDE_SUFFIX, shadowing_text};
pub use hostnic_store::cni::*;
