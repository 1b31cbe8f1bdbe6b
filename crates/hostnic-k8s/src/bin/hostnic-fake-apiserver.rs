//! `hostnic-fake-apiserver`: the fake Kubernetes API server as a process, for the lab
//! and manual runs of the agent with `--pods kube`.
//!
//! ```text
//! hostnic-fake-apiserver [--listen 127.0.0.1:0] [--kubeconfig PATH] [--node NAME[=VXNETS]]...
//! ```
//! Prints the server URL on stdout once it serves, writes a kubeconfig for it if asked,
//! adds the given nodes (with the vxnet annotation when `=VXNETS` is given), and
//! serves until SIGINT/SIGTERM. Objects are created with any client (`kubectl` works
//! for the kinds it serves).

use std::net::SocketAddr;
use std::path::PathBuf;

use hostnic_k8s::fake_apiserver::FakeApiServer;
use hostnic_k8s::node::VXNET_ANNOTATION;

fn usage() -> ! {
    eprintln!(
        "usage: hostnic-fake-apiserver [--listen ADDR] [--kubeconfig PATH] [--node NAME[=VXNETS]]..."
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut listen: SocketAddr = "127.0.0.1:0".parse().expect("literal");
    let mut kubeconfig: Option<PathBuf> = None;
    let mut nodes: Vec<(String, Option<String>)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--listen" => listen = value().parse().unwrap_or_else(|_| usage()),
            "--kubeconfig" => kubeconfig = Some(value().into()),
            "--node" => {
                let v = value();
                match v.split_once('=') {
                    Some((n, x)) => nodes.push((n.to_owned(), Some(x.to_owned()))),
                    None => nodes.push((v, None)),
                }
            }
            _ => usage(),
        }
    }
    let server = match FakeApiServer::bind(listen).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hostnic-fake-apiserver: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    for (name, vxnets) in &nodes {
        match vxnets {
            Some(v) => server.add_node(name, &[(VXNET_ANNOTATION, v)]),
            None => server.add_node(name, &[]),
        };
    }
    if let Some(path) = &kubeconfig
        && let Err(e) = std::fs::write(path, server.kubeconfig_yaml())
    {
        eprintln!("hostnic-fake-apiserver: writing {}: {e}", path.display());
        std::process::exit(1);
    }
    println!("{}", server.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
