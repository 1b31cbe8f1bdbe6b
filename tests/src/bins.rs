//! Where the suites find the workspace's binaries and the CRI client's Python.
//!
//! The suites run the binaries `cargo build --workspace` left next to the test
//! executable (`target/<profile>/`), never build them: a missing one is an error
//! that says what to run.

use std::path::PathBuf;

use anyhow::{Context, bail};

/// `target/<profile>`: the first ancestor of this executable holding `hostnic-lab`.
pub fn profile_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("where is this test binary")?;
    let mut dir = exe.parent();
    while let Some(d) = dir {
        if d.join("hostnic-lab").is_file() {
            return Ok(d.to_path_buf());
        }
        dir = d.parent();
    }
    bail!(
        "no hostnic-lab binary above {}: run `cargo build --workspace` first",
        exe.display()
    )
}

/// The workspace binary `name` (`HOSTNIC_E2E_<NAME>` overrides it).
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let var = format!("HOSTNIC_E2E_{}", name.to_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(&var) {
        return Ok(PathBuf::from(p));
    }
    let p = profile_dir()?.join(name);
    if !p.is_file() {
        bail!(
            "{} is missing: run `cargo build --workspace` first",
            p.display()
        );
    }
    Ok(p)
}

/// The Python of the CRI client's venv: `HOSTNIC_CRI_PYTHON`, else
/// `<target>/cri-venv/bin/python` as `scripts/cri-venv.sh` makes it.
pub fn cri_python() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("HOSTNIC_CRI_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let profile = profile_dir()?;
    let target = profile.parent().context("target directory")?;
    let p = target.join("cri-venv/bin/python");
    if !p.is_file() {
        bail!(
            "{} is missing: run scripts/cri-venv.sh (a venv with PyPI's container-runtime-interface-api)",
            p.display()
        );
    }
    Ok(p)
}

/// The CRI driver script (`tests/cri/cri_driver.py`).
pub fn cri_driver() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cri/cri_driver.py")
}

/// Fails unless `program` is on `PATH` or an absolute path that exists.
pub fn require(program: &str, package: &str) -> anyhow::Result<()> {
    let found = if program.starts_with('/') {
        std::path::Path::new(program).exists()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
    };
    if !found {
        bail!("{program} is missing: apt-get install {package}");
    }
    Ok(())
}
