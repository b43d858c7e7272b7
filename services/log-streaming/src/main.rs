#![forbid(unsafe_code)]
//! The `slipway-log-streaming` binary: flags, settings and signals are handled by `slipway_kit::binary`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    slipway_kit::binary::run::<slipway_log_streaming::Settings, _>(
        slipway_log_streaming::SERVICE_NAME,
        |settings, listener| {
            Box::pin(async move {
                slipway_log_streaming::serve(settings, listener, slipway_kit::shutdown_signal())
                    .await
                    .map_err(Into::into)
            })
        },
    )
    .await
}
