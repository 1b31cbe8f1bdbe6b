//! The `hostnic` CNI plugin (issue 5 builds it out).

fn main() {
    let _ = hostnic_core::types::managed_nic_name;
    eprintln!("hostnic: CNI plugin not built yet");
    std::process::exit(1);
}
