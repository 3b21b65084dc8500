//! Compiles authd's `auth.v1` protocol (the workspace's `proto/`) into a tonic client.

use std::{env, error::Error, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known_types = protoc_bin_vendored::include_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { env::set_var("PROTOC", &protoc) };
    let proto = PathBuf::from("../proto");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(
            &[proto.join("auth/v1/auth.proto")],
            &[proto, well_known_types],
        )?;
    println!("cargo:rerun-if-changed=../proto/auth");
    Ok(())
}
