//! The `hostnic` CNI plugin executable: read the environment and stdin, run,
//! write stdout once, exit.

use std::io::{Read, Write};

use hostnic_cni::env::EnvMap;
use hostnic_cni::error::CniError;
use hostnic_cni::version::LATEST;
use hostnic_cni::{MAX_STDIN, Output, run};

fn main() {
    hostnic_cni::install_panic_hook();
    // Run by a person rather than a runtime: `--version`, or no CNI variable at all
    // (upstream's plugins print their "about" text then). A runtime always sets
    // CNI_COMMAND; with other CNI_* variables and no command it gets error 4.
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let cni_vars = std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("CNI_"));
    if !cni_vars {
        if args
            .iter()
            .any(|a| a == "--version" || a == "-V" || a == "version")
        {
            print!("{}", hostnic_cni::about::version_text());
            std::process::exit(0);
        }
        if args.is_empty() || args.iter().any(|a| a == "--help" || a == "-h") {
            eprint!("{}", hostnic_cni::about::about_text());
            std::process::exit(0);
        }
    }
    let out = match collect_env() {
        Ok(env) => {
            let mut stdin = Vec::new();
            // One byte over the limit lets the parser report "too large".
            let limit = (MAX_STDIN + 1) as u64;
            match std::io::stdin().lock().take(limit).read_to_end(&mut stdin) {
                Ok(_) => run(&env, &stdin),
                Err(e) => failed(CniError::decode("cannot read stdin", e.to_string())),
            }
        }
        Err(e) => failed(e),
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.stdout.as_bytes());
    let _ = stdout.flush();
    std::process::exit(out.exit_code);
}

/// The `CNI_*` variables; a non-UTF-8 value is an invalid environment (code 4).
fn collect_env() -> Result<EnvMap, CniError> {
    let mut env = EnvMap::new();
    for (k, v) in std::env::vars_os() {
        let Some(k) = k.to_str().filter(|k| k.starts_with("CNI_")) else {
            continue;
        };
        let v = v
            .into_string()
            .map_err(|_| CniError::env(format!("{k} is not valid UTF-8"), ""))?;
        env.insert(k.to_string(), v);
    }
    Ok(env)
}

fn failed(e: CniError) -> Output {
    Output {
        stdout: e.to_json(LATEST.as_str()) + "\n",
        exit_code: 1,
    }
}
