#![forbid(unsafe_code)]
//! The `slipway-identity` binary: flags, settings and signals are handled by `slipway_kit::binary`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    slipway_kit::binary::run::<slipway_identity::Settings, _>(
        slipway_identity::SERVICE_NAME,
        |settings, listener| {
            Box::pin(async move {
                slipway_identity::serve(settings, listener, slipway_kit::shutdown_signal())
                    .await
                    .map_err(Into::into)
            })
        },
    )
    .await
}
