//! Generates the client of berth's own gRPC service (the pull progress stream) from the
//! proto berthd serves, `cri-server/proto/berth.proto`, so both sides share one definition
//! without berthctl linking berthd's crate. Needs `protoc` (hack/install-deps).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = "../cri-server/proto";
    println!("cargo:rerun-if-changed={proto_dir}/berth.proto");
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_protos(&[format!("{proto_dir}/berth.proto")], &[proto_dir.to_string()])?;
    Ok(())
}
