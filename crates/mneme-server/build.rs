//! Compiles `proto/mneme/v1/mneme.proto` and `proto/grpc/health/v1/health.proto` with
//! protox (a Rust protobuf compiler: no system `protoc`) and generates the tonic service
//! and client code from their descriptors, every service with Mneme's strict codec. The
//! encoded descriptor set is also written out for gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest.join("../../proto");
    let protos = [
        proto_root.join("mneme/v1/mneme.proto"),
        proto_root.join("grpc/health/v1/health.proto"),
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    let fds = protox::compile(&protos, [&proto_root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("mneme_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::StrictCodec")
        .compile_fds(fds)?;
    Ok(())
}
