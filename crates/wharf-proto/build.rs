//! Compiles the protobuf API with protox, so no `protoc` install is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/wharf/v1/streams.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".")
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
