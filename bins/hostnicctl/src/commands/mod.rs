//! One module per subcommand, each with an `exec()`.

pub mod cleanup;
pub mod cloud;
pub mod cluster;
pub mod completions;
pub mod introspect;
pub mod nics;
pub mod pods;
pub mod policy;
pub mod pool;
pub mod status;
