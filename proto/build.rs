//! Generates the eddy.v1 gRPC code with a pure-Rust protobuf compiler (protox),
//! so building eddy needs no `protoc` on the machine.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "eddy/v1/eddy.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // Served by tonic-reflection so grpcurl works without the .proto files.
    std::fs::write(
        out_dir.join("eddy_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
