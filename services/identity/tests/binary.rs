//! The `slipway-identity` binary as scripts run it: real PostgreSQL and NATS, health,
//! reflection, the not-built-yet answers, and a clean exit on SIGTERM.

#[tokio::test]
async fn binary_serves_its_api_surface_and_stops_on_sigterm() {
    slipway_testkit::surface::check_service_binary(
        env!("CARGO_BIN_EXE_slipway-identity"),
        slipway_identity::PACKAGES,
        slipway_identity::BUILT,
        true,
    )
    .await
    .unwrap();
}

/// `slipway-identity bootstrap` on a fresh database: the first run creates the organization
/// and prints a working token once; the second creates nothing and says so.
#[tokio::test]
async fn bootstrap_subcommand_prints_a_token_once() -> Result<(), Box<dyn std::error::Error>> {
    let db = slipway_testkit::TestDatabase::postgres().await?;
    let nats = slipway_testkit::TestNats::start().await?;
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_slipway-identity"))
            .args(["bootstrap", "--organization", "first"])
            .env("SLIPWAY__DATABASE__URL", db.url())
            .env("SLIPWAY__NATS__URL", nats.url())
            .env("SLIPWAY__NATS__NAMESPACE", nats.namespace())
            .output()
    };
    let first = run()?;
    let stdout = String::from_utf8(first.stdout)?;
    assert!(
        first.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let token = stdout
        .lines()
        .find(|line| line.starts_with("slp_"))
        .ok_or("no token printed")?;
    assert!(slipway_auth::credential::Credential::parse(token).is_ok());
    let owner = stdout
        .lines()
        .find_map(|line| line.strip_prefix("owner token (shown once): "))
        .ok_or("no owner token printed")?;
    assert!(slipway_auth::credential::Credential::parse(owner).is_ok());
    assert_ne!(owner, token);

    let second = run()?;
    let stdout = String::from_utf8(second.stdout)?;
    assert!(second.status.success());
    assert!(stdout.contains("already bootstrapped"), "{stdout}");
    assert!(!stdout.contains("slp_"), "a second token was printed");
    Ok(())
}
