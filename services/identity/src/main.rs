#![forbid(unsafe_code)]
//! The `slipway-identity` binary: flags, settings and signals are handled by `slipway_kit::binary`.
//!
//! `slipway-identity bootstrap [--organization NAME] [--config FILE]` prepares a fresh
//! install instead of serving: it creates the first organization and prints an API token
//! for it, once (see `slipway_identity::bootstrap`).
//!
//! `slipway-identity service-credential` prints a freshly generated `slps_` service
//! credential and exits. The operator puts it in `[auth].service_credential` of every
//! control-plane service, identity included: identity accepts exactly that credential as
//! the control plane, and the other services present it to read custom roles. Nothing is
//! stored, so a lost credential is replaced by generating and configuring a new one.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Flags of `slipway-identity bootstrap`.
#[derive(Debug, Parser)]
#[command(name = "slipway-identity bootstrap")]
struct BootstrapArgs {
    /// Name (DNS label) of the first organization.
    #[arg(long, default_value = "default")]
    organization: String,
    /// TOML settings file; `SLIPWAY__SECTION__KEY` variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
}

async fn bootstrap(args: BootstrapArgs) -> ExitCode {
    let name = slipway_identity::SERVICE_NAME;
    let settings: slipway_identity::Settings = match slipway_config::load(args.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{name}: {error}");
            return ExitCode::from(2);
        }
    };
    let platform = match slipway_identity::connect(&settings).await {
        Ok((_identity, platform)) => platform,
        Err(error) => {
            eprintln!("{name}: {error}");
            return ExitCode::FAILURE;
        }
    };
    match slipway_identity::bootstrap(&platform, &args.organization).await {
        Ok(done) => {
            println!(
                "organization {} created ({})",
                args.organization, done.organization_id
            );
            println!("owner token (shown once): {}", done.owner_secret);
            println!("api token (ADMIN), shown once; keep it safe:");
            println!("{}", done.secret);
            ExitCode::SUCCESS
        }
        Err(slipway_identity::BootstrapError::AlreadyBootstrapped) => {
            println!("already bootstrapped: an organization exists, nothing was created");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{name}: bootstrap failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a new `slps_` credential from the operating system's CSPRNG.
fn service_credential() -> ExitCode {
    match slipway_auth::NewCredential::generate(slipway_auth::CredentialKind::Service) {
        Ok(credential) => {
            println!("{}", credential.expose_secret());
            eprintln!(
                "put it in [auth].service_credential (SLIPWAY__AUTH__SERVICE_CREDENTIAL) of every slipway service; it is not stored anywhere"
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{}: {error}", slipway_identity::SERVICE_NAME);
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("service-credential") {
        return service_credential();
    }
    if std::env::args().nth(1).as_deref() == Some("bootstrap") {
        let args = BootstrapArgs::parse_from(std::env::args().skip(1));
        return bootstrap(args).await;
    }
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
