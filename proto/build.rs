//! Compiles every `.proto` under `proto/` with protox (pure Rust; no system
//! `protoc`) and generates tonic clients and servers.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/process.proto",
        "proto/filesystem.proto",
        "proto/wrenn/v1/sandbox.proto",
        "proto/wrenn/v1/template.proto",
        "proto/wrenn/v1/agent.proto",
        "proto/wrenn/v1/control.proto",
        "proto/wrenn/v1/guest.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    // For JSON (proto3 canonical mapping) by reflection: the guest's
    // envd-compatible Connect interface.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // `process.Process/Connect` would clash with the generated `connect()`
        // constructor; clients are built with `XClient::new(channel)` instead.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
