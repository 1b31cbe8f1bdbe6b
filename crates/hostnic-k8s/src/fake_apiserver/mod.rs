//! Fake API server.
