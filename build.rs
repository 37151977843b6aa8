//! Compiles `proto/` with a pure-Rust protobuf compiler (protox), so building
//! engage needs no system `protoc`. The encoded descriptor set is kept beside
//! the generated code so tests can check JSON and protobuf field names agree.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = ["engage/v1/events.proto", "engage/v1/outputs.proto", "engage/v1/state.proto"];
    let fds = protox::compile(files, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("engage_descriptor.bin"), fds.encode_to_vec())?;
    // BTreeMap for map fields: deterministic encoding (same input, same bytes).
    prost_build::Config::new().btree_map(["."]).compile_fds(fds)?;
    Ok(())
}
