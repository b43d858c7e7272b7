#![forbid(unsafe_code)]
//! The `slipway-build-runner` binary: flags, settings and signals are handled by `slipway_kit::binary`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    slipway_kit::binary::run::<slipway_build_runner::Settings, _>(
        slipway_build_runner::SERVICE_NAME,
        |settings, listener| {
            Box::pin(async move {
                slipway_build_runner::serve(settings, listener, slipway_kit::shutdown_signal())
                    .await
                    .map_err(Into::into)
            })
        },
    )
    .await
}
