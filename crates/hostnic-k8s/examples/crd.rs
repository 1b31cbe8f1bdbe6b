//! Prints the `HostnicNode` CustomResourceDefinition as YAML (`deploy/crd.yaml`):
//! `cargo run -p hostnic-k8s --example crd > deploy/crd.yaml`.

fn main() {
    print!("{}", hostnic_k8s::crd::crd_yaml());
}
