//! One file per subcommand, each with an `exec` that returns whether everything held.

pub mod agent;
pub mod apply;
pub mod bench;
pub mod check;
pub mod demo;
pub mod down;
pub mod leaks;
pub mod listen;
pub mod netpol;
pub mod netpol_bench;
pub mod nic;
pub mod ns;
pub mod pod;
pub mod podman;
pub mod scale;
pub mod serve;
pub mod up;
