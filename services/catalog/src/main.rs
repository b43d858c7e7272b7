#![forbid(unsafe_code)]
//! The `slipway-catalog` binary: flags, settings and signals are handled by `slipway_kit::binary`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    slipway_kit::binary::run::<slipway_catalog::Settings, _>(
        slipway_catalog::SERVICE_NAME,
        |settings, listener| {
            Box::pin(async move {
                slipway_catalog::serve(settings, listener, slipway_kit::shutdown_signal())
                    .await
                    .map_err(Into::into)
            })
        },
    )
    .await
}
