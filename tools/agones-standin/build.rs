//! Generates the server side of the Agones SDK from the `.proto` files the `agones` crate
//! itself is built from (that crate generates only the client).

use std::path::PathBuf;
use std::process::Command;

/// Generates the service code from the `agones` crate's own protos, so the stand-in speaks
/// exactly the protocol of the SDK version the instance server links.
fn main() {
    println!("cargo:rerun-if-env-changed=CROFT_AGONES_PROTO");
    println!("cargo:rerun-if-changed=../../Cargo.lock");
    let dir = agones_proto_dir().unwrap_or_else(|e| {
        panic!(
            "{e}\n\nThe Agones SDK stand-in is generated from the `agones` crate's own proto/ \
             folder. Point CROFT_AGONES_PROTO at that folder (for example \
             $CARGO_HOME/registry/src/*/agones-<version>/proto) to skip the look-up."
        )
    });
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
                "compiling the Agones SDK protos from {} (protoc and the well-known protos come \
                 from apt's protobuf-compiler and libprotobuf-dev; scripts/build-deps installs \
                 them): {e}",
                dir.display()
            )
        });
}

/// The `proto` folder of the `agones` package in the dependency graph (or `CROFT_AGONES_PROTO`).
///
/// `cargo metadata` is restricted to the platform being built for: unrestricted, it needs every
/// package of the lock file on disk, including ones for other platforms that a Linux build never
/// downloads (so it worked only where an earlier build had filled the cargo cache). It is not
/// `--offline` either: the build may not have needed the dev-dependencies metadata lists, and
/// cargo downloads what is missing (or fails with its own message under `CARGO_NET_OFFLINE`).
fn agones_proto_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("CROFT_AGONES_PROTO") {
        return Ok(PathBuf::from(dir));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?)
        .join("Cargo.toml");
    let target = std::env::var("TARGET").map_err(|e| format!("TARGET is not set: {e}"))?;
    let out = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--filter-platform"])
        .arg(&target)
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .map_err(|e| format!("running `{cargo} metadata`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`cargo metadata --filter-platform {target}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("`cargo metadata` printed no JSON: {e}"))?;
    let manifest_path = meta["packages"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "agones"))
        .and_then(|p| p["manifest_path"].as_str())
        .ok_or("the `agones` package is not in `cargo metadata`'s dependency graph")?;
    let dir = PathBuf::from(manifest_path)
        .parent()
        .ok_or("the agones manifest has no folder")?
        .join("proto");
    if !dir.join("sdk/sdk.proto").is_file() {
        return Err(format!("{} has no sdk/sdk.proto", dir.display()));
    }
    Ok(dir)
}
