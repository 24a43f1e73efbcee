//! Generates the server side of the Agones SDK from the `.proto` files the `agones` crate
//! itself is built from (that crate generates only the client), so the stand-in speaks exactly
//! the protocol of the SDK version the instance server links.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=CROFT_AGONES_PROTO");
    println!("cargo:rerun-if-changed=../../Cargo.lock");
    let dir = agones_proto_dir();
    let sdk = dir.join("sdk");
    tonic_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_protos(
            &[sdk.join("sdk.proto"), sdk.join("beta/beta.proto")],
            &[
                dir.join("googleapis"),
                dir.join("grpc-gateway"),
                sdk.clone(),
                sdk.join("beta"),
            ],
        )
        .unwrap_or_else(|e| {
            panic!(
                "compiling the Agones SDK protos from {} (protoc comes from apt's protobuf-compiler): {e}",
                dir.display()
            )
        });
}

/// The `proto` folder of the `agones` package in the dependency graph (or `CROFT_AGONES_PROTO`).
fn agones_proto_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CROFT_AGONES_PROTO") {
        return PathBuf::from(dir);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let package = meta["packages"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "agones"))
        .expect("the agones package is in the dependency graph");
    let manifest_path = PathBuf::from(
        package["manifest_path"]
            .as_str()
            .expect("agones has a manifest path"),
    );
    manifest_path
        .parent()
        .expect("a manifest sits in a folder")
        .join("proto")
}
