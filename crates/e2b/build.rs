//! Generates the Rust types of `proto/` at build time: protox parses and checks the .proto
//! files in Rust (no `protoc` binary on the build machine), prost-build writes the message
//! types, pbjson-build their proto3 JSON mapping (serde).

use prost::Message;

const FILES: [&str; 2] = ["process/process.proto", "filesystem/filesystem.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(FILES, ["proto"])?;
    let descriptors = fds.encode_to_vec();
    prost_build::Config::new()
        .extern_path(".google.protobuf.Timestamp", "crate::timestamp::Timestamp")
        .enable_type_names()
        .compile_fds(fds)?;
    // Unknown JSON fields are ignored, as Connect's own servers do: a newer SDK may send a
    // field this daemon does not know yet, and refusing it would break that SDK.
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .ignore_unknown_fields()
        .build(&[".process", ".filesystem"])?;
    Ok(())
}
