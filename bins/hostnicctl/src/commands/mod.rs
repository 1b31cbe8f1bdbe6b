//! One module per subcommand, each with an `exec()`.

pub mod cloud;
