//! Generates berth's own gRPC service (`proto/berth.proto`: the pull progress stream)
//! with tonic's codegen. Needs `protoc` (hack/install-deps installs protobuf-compiler).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/berth.proto");
    tonic_prost_build::configure()
        .build_server(true)
        // berthd's own tests and berthctl speak to the service as clients.
        .build_client(true)
        .compile_protos(&["proto/berth.proto"], &["proto"])?;
    Ok(())
}
