//! The CNI plugin ↔ agent protocol (see `docs/agent-api.md`).
//!
//! Owned by the CNI plugin work (issue 5); intentionally empty until then.
