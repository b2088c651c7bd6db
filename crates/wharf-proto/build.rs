//! Compiles the protobuf API with protox, so no `protoc` install is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/wharf/v1/streams.proto",
        "proto/wharf/v1/queues.proto",
        "proto/wharf/v1/payloads.proto",
    ];
    for f in files.iter().chain(&["proto/google/rpc/status.proto"]) {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".")
        .btree_map(".")
        // `google.rpc.Status` (per-receipt errors of Ack) is tonic-types'
        // type, so the rich-error helpers work on it unchanged.
        .extern_path(".google.rpc", "::tonic_types::pb")
        .compile_fds(fds)?;
    Ok(())
}
