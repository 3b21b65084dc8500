//! Compiles `proto/` into Rust (tonic + prost) and writes the file descriptor set that server
//! reflection serves. protoc comes from `protoc-bin-vendored`, so no system protoc is needed.

use std::{env, error::Error, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known_types = protoc_bin_vendored::include_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { env::set_var("PROTOC", protoc) };

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("auth_descriptor.bin"))
        .compile_protos(
            &[PathBuf::from("proto/auth/v1/auth.proto")],
            &[PathBuf::from("proto"), well_known_types],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
