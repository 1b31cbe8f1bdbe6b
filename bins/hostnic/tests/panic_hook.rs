//! A panic still answers the runtime: the hook prints the CNI error JSON
//! (code 999) on stdout and exits 1. Runs without the libtest harness: the
//! test re-executes itself as the child that panics.

const CHILD: &str = "HOSTNIC_PANIC_HOOK_CHILD";

fn main() {
    if std::env::var_os(CHILD).is_some() {
        hostnic_cni::install_panic_hook();
        let v: Vec<u8> = Vec::new();
        // An out-of-bounds index: the kind of bug the hook exists for.
        let _ = v[std::hint::black_box(3)];
        unreachable!("indexing an empty vector panics");
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "the hook exits 1");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let err: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {stdout:?}"));
    assert_eq!(err["code"], 999);
    assert_eq!(err["cniVersion"], "1.1.0");
    assert_eq!(err["msg"], "hostnic plugin panicked");
    assert!(
        err["details"]
            .as_str()
            .unwrap()
            .contains("index out of bounds"),
        "{err}"
    );
    println!("panic_hook: ok");
}
