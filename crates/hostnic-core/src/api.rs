//! The CNI plugin ↔ agent protocol, written down once (see `docs/agent-api.md`).
//!
//! The `hostnic` CNI binary is a thin client: for every verb it sends one
//! [`Request`] over the agent's Unix socket and prints what the [`Response`]
//! says. Both sides share these types, so the wire format cannot drift between
//! them. Everything here is pure: encoding and decoding work on byte slices and
//! the caller owns the socket.
//!
//! ## Layout
//! - [`messages`]: the request and response of every verb (ADD, DEL, CHECK, GC,
//!   STATUS), the protocol version and the error the agent answers with.
//! - [`framing`]: a 4-byte big-endian length prefix followed by JSON, with a
//!   maximum frame size.
//! - [`pending_del`]: the record the plugin leaves under
//!   `<stateDir>/pending-del/` when a DEL cannot reach the agent, and its file name.
//! - [`reply`]: the agent's side of the verbs that is pure: engine errors as CNI
//!   error codes, the ADD reply, the CHECK comparison, the STATUS answer.
//! - [`introspect`]: the JSON documents of the agent's `/v1/*` endpoints.
//! - [`admission`]: the plugin socket's byte budget and its "agent busy" answer.

pub mod admission;
pub mod framing;
pub mod introspect;
pub mod messages;
pub mod pending_del;
pub mod reply;

/// Where the agent listens for the plugin unless configured otherwise (the
/// agent's `socket`, the plugin's `agentSocket`).
pub const DEFAULT_AGENT_SOCKET: &str = "/run/hostnic/hostnic.sock";

/// The agent's checkpoint and the plugin's pending DELs live here unless
/// configured otherwise (the agent's `state_dir`, the plugin's `stateDir`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/hostnic";

pub use framing::{FrameError, HEADER_LEN, MAX_FRAME_LEN, decode_frame, encode_frame, frame_len};
pub use messages::*;
pub use pending_del::{PENDING_DEL_DIR, PendingDel, pending_del_file_name};
