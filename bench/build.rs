//! Compiles the bench-only echo proto with protox (no `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let descriptor_set = protox::compile(["proto/echo.proto"], ["proto"])?;
    println!("cargo:rerun-if-changed=proto/echo.proto");
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(descriptor_set)?;
    Ok(())
}
