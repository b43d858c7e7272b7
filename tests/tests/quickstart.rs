//! The README's quickstart, run as a newcomer runs it, against a real `slipway dev`: the
//! shell block between the `<!-- quickstart -->` markers, line by line through `sh`, with
//! the `slipway` binary this build made first on `PATH`.
//!
//! Only what cannot be the same on a shared test machine is replaced: the address
//! (`127.0.0.1:7800`, here a free port), the token (`slp_…`, here the one this `slipway dev`
//! printed), the app's port (`8080`, here a free one), the example's scratch copy
//! (`/tmp/hello`, here a temporary directory) and the build line (`cargo build -p slipway`:
//! the test harness built it already). The app must answer over HTTP and its log lines
//! must come back through `slipway logs`. `distributed.rs` runs the same block against the
//! services run separately behind nginx.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Dev, check_quickstart, run_quickstart};

#[tokio::test]
async fn the_readme_quickstart_works_as_written_against_slipway_dev() {
    let scratch = tempfile::tempdir().unwrap();
    let dev = Dev::start(
        &scratch.path().join("data"),
        scratch.path().join("slipway-dev.log"),
    )
    .await;
    let outputs = run_quickstart(&dev.addr, &dev.owner_token, scratch.path()).await;
    let log = dev.log();
    dev.terminate().await;
    match outputs {
        Ok(outputs) => check_quickstart(&outputs, &log),
        Err(failure) => panic!("{failure}\n--- slipway dev ---\n{log}"),
    }
}
