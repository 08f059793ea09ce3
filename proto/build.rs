//! Compiles `doorwatch/v1/*.proto` with the protoc binary vendored by
//! `protoc-bin-vendored`, so building never needs a system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::LeanCodec")
        .compile_with_config(
            config,
            &[
                "doorwatch/v1/agent_stream.proto",
                "doorwatch/v1/enrollment.proto",
            ],
            &["."],
        )?;
    println!("cargo:rerun-if-changed=doorwatch/v1");
    Ok(())
}
