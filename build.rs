//! Compiles `proto/auth` into Rust (tonic + prost) and writes the file descriptor sets that server
//! reflection serves: authd's own, and Envoy's `envoy.service.auth.v3` (whose Rust types come
//! from the `envoy-types` crate; `proto/vendor` holds the .proto files it was generated from).
//! protoc comes from `protoc-bin-vendored`, so no system protoc is needed.

use std::{env, error::Error, path::PathBuf, process::Command};

fn main() -> Result<(), Box<dyn Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known_types = protoc_bin_vendored::include_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { env::set_var("PROTOC", &protoc) };

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("auth_descriptor.bin"))
        .compile_protos(
            &[PathBuf::from("proto/auth/v1/auth.proto")],
            &[PathBuf::from("proto"), well_known_types.clone()],
        )?;

    let envoy = Command::new(&protoc)
        .arg("--proto_path=proto/vendor")
        .arg(format!("--proto_path={}", well_known_types.display()))
        .arg("--include_imports")
        .arg(format!(
            "--descriptor_set_out={}",
            out_dir.join("envoy_ext_authz_descriptor.bin").display()
        ))
        .arg("envoy/service/auth/v3/external_auth.proto")
        .status()?;
    if !envoy.success() {
        return Err(format!("protoc failed on proto/vendor: {envoy}").into());
    }
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
