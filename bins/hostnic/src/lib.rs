//! # hostnic (CNI plugin)
//!
//! The `hostnic` CNI plugin is a thin, synchronous client of the node agent:
//! it validates what the runtime gave it (environment and network
//! configuration), sends one request over the agent's Unix socket
//! (`hostnic_core::api`, documented in `docs/agent-api.md`) and prints the CNI
//! result or error in the configuration's version. It has no async runtime and
//! no HTTP or Kubernetes client, so it starts in well under a millisecond.
//!
//! ## Layout
//! - [`about`]: `hostnic --version` and the "about" text for a person running it.
//! - [`env`]: `CNI_*` variables and `CNI_ARGS`.
//! - [`config`]: the network configuration from stdin.
//! - [`version`]: the supported CNI versions.
//! - [`result`]: rendering the ADD result per version; reading `prevResult`.
//! - [`error`]: the CNI error JSON.
//! - [`client`]: the Unix-socket client with timeouts.
//! - [`pending`]: the durable pending-DEL file.
//! - [`log`]: a tiny logger (log file or stderr, never stdout).
//! - [`commands`]: one module per verb, each with an `exec()`.

pub mod about;
pub mod client;
pub mod commands;
pub mod config;
pub mod env;
pub mod error;
pub mod log;
pub mod pending;
pub mod result;
pub mod version;

use std::sync::OnceLock;

use hostnic_core::api::codes;

use crate::config::NetConf;
use crate::env::{CniEnv, Command, EnvMap};
use crate::error::CniError;
use crate::log::{Level, Logger};
use crate::version::{CniVersion, LATEST};

/// The largest network configuration accepted on stdin (1 MiB).
pub const MAX_STDIN: usize = 1 << 20;

/// What one invocation asks for, fully validated.
// One exists per process; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// `VERSION`: list the supported versions, answering in `answer_in`.
    Version {
        /// The version to write in the answer's `cniVersion`.
        answer_in: CniVersion,
    },
    /// A verb that talks to the agent.
    Verb {
        /// The environment.
        env: CniEnv,
        /// The network configuration.
        conf: NetConf,
    },
}

/// A rejected invocation: the error and the `cniVersion` to report it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong.
    pub error: CniError,
    /// The `cniVersion` the error JSON carries.
    pub cni_version: String,
}

/// What the process prints on stdout and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The whole of stdout: a result, an error, or nothing.
    pub stdout: String,
    /// 0 on success, 1 on any error.
    pub exit_code: i32,
}

/// Parses and validates an invocation without any I/O. Checks, in order:
/// `CNI_COMMAND` (4), stdin is a JSON object (6), `cniVersion` (1), the verb
/// exists in that version (1), the environment (4), the configuration (7).
pub fn parse_invocation(env: &EnvMap, stdin: &[u8]) -> Result<Invocation, Failure> {
    let fail = |error: CniError, v: &str| Failure {
        error,
        cni_version: v.to_string(),
    };
    let latest = LATEST.as_str();
    let command = env::parse_command(env).map_err(|e| fail(e, latest))?;
    if command == Command::Version {
        // VERSION never fails: answer in the asked version if we speak it.
        let answer_in = config::decode(stdin)
            .ok()
            .and_then(|raw| config::version(&raw).ok())
            .unwrap_or(LATEST);
        return Ok(Invocation::Version { answer_in });
    }
    if stdin.len() > MAX_STDIN {
        return Err(fail(
            CniError::decode(
                "network config too large",
                format!("more than {MAX_STDIN} bytes"),
            ),
            latest,
        ));
    }
    let raw = config::decode(stdin).map_err(|e| fail(e, latest))?;
    let report_in = config::raw_version(&raw)
        .filter(|v| looks_like_version(v))
        .unwrap_or(latest)
        .to_string();
    let version = config::version(&raw).map_err(|e| fail(e, &report_in))?;
    let allowed = match command {
        Command::Check => version.has_check(),
        Command::Gc | Command::Status => version.has_gc_and_status(),
        _ => true,
    };
    if !allowed {
        return Err(fail(
            CniError::incompatible(
                format!("{} is not defined in CNI {version}", command.as_str()),
                match command {
                    Command::Check => "CHECK needs cniVersion 0.4.0 or later",
                    _ => "GC and STATUS need cniVersion 1.1.0 or later",
                },
            ),
            &report_in,
        ));
    }
    let cni_env = env::parse_env(command, env).map_err(|e| fail(e, &report_in))?;
    let conf = config::parse(&raw, version).map_err(|e| fail(e, &report_in))?;
    Ok(Invocation::Verb { env: cni_env, conf })
}

/// A version string safe to echo back: short, digits and dots only.
fn looks_like_version(v: &str) -> bool {
    !v.is_empty() && v.len() <= 16 && v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// The `cniVersion` a panic reports its error in; set once the config is parsed.
static ANSWER_VERSION: OnceLock<String> = OnceLock::new();

/// Runs one invocation: parse, talk to the agent, render. Never panics on any
/// input; the whole of stdout is returned so it is written in one piece.
pub fn run(env: &EnvMap, stdin: &[u8]) -> Output {
    let invocation = match parse_invocation(env, stdin) {
        Ok(i) => i,
        Err(f) => {
            let _ = ANSWER_VERSION.set(f.cni_version.clone());
            Logger::stderr(Level::Error).error(format_args!("rejected invocation: {}", f.error));
            return failure(&f.error, &f.cni_version);
        }
    };
    let (env, conf) = match invocation {
        Invocation::Version { answer_in } => {
            return Output {
                stdout: commands::version::exec(answer_in),
                exit_code: 0,
            };
        }
        Invocation::Verb { env, conf } => (env, conf),
    };
    let _ = ANSWER_VERSION.set(conf.version.as_str().to_string());
    let mut log = Logger::open(conf.log_file.as_deref(), conf.log_level);
    log.set_context(match (&env.container_id, &env.ifname) {
        (Some(c), Some(i)) => format!("{} {c}/{i}", env.command.as_str()),
        _ => format!("{} network={}", env.command.as_str(), conf.name),
    });
    let ctx = commands::Ctx {
        env: &env,
        conf: &conf,
        log: &log,
    };
    let outcome = match env.command {
        Command::Add => commands::add::exec(&ctx),
        Command::Del => commands::del::exec(&ctx),
        Command::Check => commands::check::exec(&ctx),
        Command::Gc => commands::gc::exec(&ctx),
        Command::Status => commands::status::exec(&ctx),
        Command::Version => Ok(commands::version::exec(conf.version)),
    };
    match outcome {
        Ok(stdout) => Output {
            stdout,
            exit_code: 0,
        },
        Err(e) => {
            log.error(format_args!("failed: {e}"));
            failure(&e, conf.version.as_str())
        }
    }
}

fn failure(e: &CniError, cni_version: &str) -> Output {
    Output {
        stdout: e.to_json(cni_version) + "\n",
        exit_code: 1,
    }
}

/// Makes a panic print the CNI error JSON (code 999) on stdout and exit 1,
/// so a bug still gives the runtime an answer it can parse.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let version = ANSWER_VERSION.get().map_or(LATEST.as_str(), String::as_str);
        let err = CniError::new(codes::INTERNAL, "hostnic plugin panicked", info.to_string());
        eprintln!("hostnic: {err}");
        println!("{}", err.to_json(version));
        std::process::exit(1);
    }));
}
