#![forbid(unsafe_code)]
//! The `slipway-orchestrator` binary: flags, settings and signals are handled by `slipway_kit::binary`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    slipway_kit::binary::run::<slipway_orchestrator::Settings, _>(
        slipway_orchestrator::SERVICE_NAME,
        |settings, listener| {
            Box::pin(async move {
                slipway_orchestrator::serve(settings, listener, slipway_kit::shutdown_signal())
                    .await
                    .map_err(Into::into)
            })
        },
    )
    .await
}
