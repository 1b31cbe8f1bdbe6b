//! One module per subcommand, each with an `exec()`.

pub mod cloud;
pub mod introspect;
pub mod nics;
pub mod pods;
pub mod policy;
pub mod pool;
pub mod status;
