//! `slipway dev` as a newcomer runs it: one process, one port, every public API, data kept
//! in the data directory across restarts.

const ALL_PACKAGES: &[&str] = &[
    "slipway.identity.v1",
    "slipway.catalog.v1",
    "slipway.deploy.v1",
    "slipway.agent.v1",
    "slipway.build.v1",
    "slipway.logs.v1",
];

#[tokio::test]
async fn dev_serves_every_api_on_one_port_and_restarts_on_its_data() {
    let data_dir = tempfile::tempdir().unwrap();
    let data_dir_arg = data_dir.path().to_str().unwrap();
    let binary = env!("CARGO_BIN_EXE_slipway");
    for _start in 0..2 {
        let process = slipway_testkit::binary::ServiceProcess::start(
            binary,
            &["dev", "--data-dir", data_dir_arg],
            &[],
        )
        .await
        .unwrap();
        let built: Vec<&str> = [
            slipway_identity::BUILT,
            slipway_catalog::BUILT,
            slipway_orchestrator::BUILT,
            slipway_build_runner::BUILT,
            slipway_log_streaming::BUILT,
        ]
        .concat();
        let not_built: Vec<String> = slipway_testkit::surface::slipway_services(ALL_PACKAGES)
            .into_iter()
            .filter(|service| !built.contains(&service.as_str()))
            .collect();
        let not_built: Vec<&str> = not_built.iter().map(String::as_str).collect();
        slipway_testkit::surface::check_surface(
            slipway_testkit::grpc::channel(process.addr()),
            ALL_PACKAGES,
            &not_built,
        )
        .await
        .unwrap();
        assert!(data_dir.path().join("slipway.db").exists());
        let exit = process.terminate().await.unwrap();
        assert!(exit.success(), "{exit}");
    }
}
