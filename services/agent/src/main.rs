#![forbid(unsafe_code)]
//! The `slipway-agent` binary: flags, settings and signals are handled by `slipway_kit::binary`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    slipway_kit::binary::run::<slipway_agent::Settings, _>(
        slipway_agent::SERVICE_NAME,
        |settings, listener| {
            Box::pin(async move {
                slipway_agent::serve(settings, listener, slipway_kit::shutdown_signal())
                    .await
                    .map_err(Into::into)
            })
        },
    )
    .await
}
