#![forbid(unsafe_code)]
//! `slipway`: the command line for people and scripts. `slipway dev` runs every service in
//! one process; every other command is a gRPC client of Slipway's one public address.

mod app;
mod client;
mod commands;
mod config;
mod dev;
mod errors;
mod output;
mod time;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{catalog, deploy, identity, logs, rules, services, session, variables};

const EXAMPLES: &str = "Getting started:
  slipway dev                                   # in one terminal: Slipway, nothing to install
  slipway login --address 127.0.0.1:7800        # paste the token `slipway dev` printed
  slipway project create shop
  slipway context set --project shop
  slipway environment create dev
  slipway context set --environment dev
  slipway service create hello --git-url \"$PWD/hello\" --branch main --port 8080 \\
      --http-probe / -- python3 app.py
  slipway deploy
  slipway status
  slipway logs -f

Every command has examples in its --help. Scripts: `-o json`, exit codes 0 (done),
1 (error), 2 (bad usage), 3 (the deployment failed); SLIPWAY_ADDRESS and SLIPWAY_TOKEN
override the config file ($SLIPWAY_CONFIG, else ~/.config/slipway/config.toml).";

#[derive(Debug, Parser)]
#[command(
    name = "slipway",
    version,
    about = "Slipway: your own developer platform",
    after_help = EXAMPLES
)]
struct Cli {
    /// Output: tables for people, JSON for scripts.
    #[arg(short = 'o', long, value_enum, global = true, default_value = "table")]
    output: output::Format,
    #[command(flatten)]
    scope: app::ScopeArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every Slipway service in this process: SQLite in the data directory, the
    /// in-memory event bus, nothing to install.
    #[command(
        after_help = "Examples:\n  slipway dev --listen 127.0.0.1:7800 --data-dir .slipway-dev"
    )]
    Dev(dev::DevArgs),
    /// Stores Slipway's address and your token (checked first) in the config file.
    Login(session::LoginArgs),
    /// Removes the token from the config file.
    #[command(after_help = "Examples:\n  slipway logout")]
    Logout,
    /// Shows or sets the organization, project and environment commands act on.
    Context(session::ContextArgs),
    /// Organizations you are a member of.
    #[command(subcommand, visible_alias = "org", after_help = identity::ORGANIZATION_EXAMPLES)]
    Organization(identity::OrganizationCommand),
    /// Members of the organization and their roles.
    #[command(subcommand, after_help = identity::MEMBER_EXAMPLES)]
    Member(identity::MemberCommand),
    /// API tokens of the organization (for CI and scripts).
    #[command(subcommand, after_help = identity::TOKEN_EXAMPLES)]
    Token(identity::TokenCommand),
    /// Projects of the organization.
    #[command(subcommand, after_help = catalog::PROJECT_EXAMPLES)]
    Project(catalog::ProjectCommand),
    /// Environments of the project.
    #[command(subcommand, visible_alias = "env", after_help = catalog::ENVIRONMENT_EXAMPLES)]
    Environment(catalog::EnvironmentCommand),
    /// Services of the environment: applications, containers, databases, jobs, Helm charts.
    #[command(subcommand, visible_alias = "svc", after_help = services::SERVICE_EXAMPLES)]
    Service(services::ServiceCommand),
    /// Clusters environments run on.
    #[command(subcommand, after_help = catalog::CLUSTER_EXAMPLES)]
    Cluster(catalog::ClusterCommand),
    /// Variables and secrets of a project, environment or service.
    #[command(subcommand, visible_alias = "var", after_help = variables::VARIABLE_EXAMPLES)]
    Variable(variables::VariableCommand),
    /// Deployment rules: start/stop schedules of non-production environments.
    #[command(subcommand, after_help = rules::RULE_EXAMPLES)]
    Rule(rules::RuleCommand),
    /// Deploys the environment (or one service) and follows it.
    Deploy(deploy::ActionArgs),
    /// Stops the environment (or one service) and follows it.
    Stop(deploy::ActionArgs),
    /// Restarts the environment (or one service) and follows it.
    Restart(deploy::ActionArgs),
    /// Removes the environment's (or one service's) resources from its cluster.
    Delete(deploy::ActionArgs),
    /// Cancels a deployment (default: the running one).
    Cancel(deploy::CancelArgs),
    /// Deploys again what an earlier deployment deployed.
    Rollback(deploy::RollbackArgs),
    /// Shows what runs in the environment.
    Status(deploy::StatusArgs),
    /// Lists the environment's deployments, or shows one in detail.
    Deployments(deploy::DeploymentsArgs),
    /// Shows or follows the environment's logs.
    Logs(logs::LogsArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Dev(args) = cli.command {
        return match dev::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("slipway: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match config::Config::load() {
        Ok(config) => config,
        Err(error) => return errors::report(&error, None),
    };
    let mut app = app::App {
        config,
        format: cli.output,
        scope: cli.scope,
    };
    let outcome = run(&mut app, cli.command).await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => errors::report(&error, app.address().as_deref()),
    }
}

async fn run(app: &mut app::App, command: Command) -> anyhow::Result<()> {
    use deploy::Action;
    match command {
        Command::Dev(_) => Ok(()),
        Command::Login(args) => session::login(app, args).await,
        Command::Logout => session::logout(app),
        Command::Context(args) => session::context(app, args).await,
        Command::Organization(command) => identity::organization(app, command).await,
        Command::Member(command) => identity::member(app, command).await,
        Command::Token(command) => identity::token(app, command).await,
        Command::Project(command) => catalog::project(app, command).await,
        Command::Environment(command) => catalog::environment(app, command).await,
        Command::Service(command) => services::service(app, command).await,
        Command::Cluster(command) => catalog::cluster(app, command).await,
        Command::Variable(command) => variables::variable(app, command).await,
        Command::Rule(command) => rules::rule(app, command).await,
        Command::Deploy(args) => deploy::action(app, Action::Deploy, args).await,
        Command::Stop(args) => deploy::action(app, Action::Stop, args).await,
        Command::Restart(args) => deploy::action(app, Action::Restart, args).await,
        Command::Delete(args) => deploy::action(app, Action::Delete, args).await,
        Command::Cancel(args) => deploy::cancel(app, args).await,
        Command::Rollback(args) => deploy::rollback(app, args).await,
        Command::Status(args) => deploy::status(app, args).await,
        Command::Deployments(args) => deploy::deployments(app, args).await,
        Command::Logs(args) => logs::logs(app, args).await,
    }
}
