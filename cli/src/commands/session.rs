//! `login`, `logout` and `context`: where Slipway is, who the CLI is, and what it acts on.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use slipway_proto::identity::v1 as ipb;
use tonic::Request;

use crate::app::{App, resolve_environment, resolve_organization, resolve_project};
use crate::client::{Client, normalize_address};
use crate::errors::UserError;
use crate::output::{self, Format, label};

const LOGIN_EXAMPLES: &str = "Examples:
  slipway login --address 127.0.0.1:7800 --token slp_...
  echo \"$SLIPWAY_TOKEN\" | slipway login --address slipway.example.com:443
  slipway login            # asks for the token; the address defaults to 127.0.0.1:7800";

#[derive(Debug, clap::Args)]
#[command(after_help = LOGIN_EXAMPLES)]
pub struct LoginArgs {
    /// Slipway's address (HOST:PORT or a URL); default: the configured one, else
    /// 127.0.0.1:7800 (`slipway dev`).
    #[arg(long)]
    address: Option<String>,
    /// The API token (`slp_…`); default: read from stdin. A flag is visible to other local
    /// users in the process list: prefer stdin outside of tests.
    #[arg(long)]
    token: Option<String>,
}

/// Verifies the token against identity, then stores the address and token (0600) and, when
/// the token belongs to exactly one organization, selects it.
pub async fn login(app: &mut App, args: LoginArgs) -> anyhow::Result<()> {
    let address = args
        .address
        .or_else(|| app.config.address.clone())
        .unwrap_or_else(|| "127.0.0.1:7800".to_owned());
    let token = match args.token {
        Some(token) => token,
        None => read_token()?,
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err(UserError::hinted(
            "no token given",
            "pass --token, or pipe it on stdin; `slipway dev` prints one on its first start",
        )
        .into());
    }
    let client = Client::new(&address, Some(&token))?;
    let principal = client
        .auth()
        .authenticate(Request::new(ipb::AuthenticateRequest {
            credential: token.clone(),
        }))
        .await?
        .into_inner()
        .principal
        .unwrap_or_default();
    app.config.address = Some(normalize_address(&address));
    app.config.token = Some(token);
    if let [membership] = principal.memberships.as_slice()
        && app.config.context.organization_id.as_deref() != Some(&membership.organization_id)
    {
        app.config.context = crate::config::Context {
            organization_id: Some(membership.organization_id.clone()),
            organization: Some(membership.organization_name.clone()),
            ..Default::default()
        };
    }
    let path = app.config.save()?;
    match app.format {
        Format::Json => output::one(app.format, &principal, &[]),
        Format::Table => {
            let who = if principal.display_name.is_empty() {
                principal.id.clone()
            } else {
                principal.display_name.clone()
            };
            println!(
                "logged in to {} as {who} ({})",
                client.address,
                label!(ipb::PrincipalKind, principal.kind).to_lowercase()
            );
            if let Some(organization) = &app.config.context.organization {
                println!("organization: {organization}");
            }
            eprintln!("token stored in {}", path.display());
            Ok(())
        }
    }
}

fn read_token() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("token: ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    Ok(line)
}

pub fn logout(app: &mut App) -> anyhow::Result<()> {
    app.config.token = None;
    let path = app.config.save()?;
    println!("logged out: the token is removed from {}", path.display());
    Ok(())
}

const CONTEXT_EXAMPLES: &str = "Examples:
  slipway context                                  # show it
  slipway context set --project shop -e staging    # act on shop/staging from now on
  slipway context set --org acme                   # another organization (clears project)";

#[derive(Debug, clap::Args)]
#[command(after_help = CONTEXT_EXAMPLES)]
pub struct ContextArgs {
    #[command(subcommand)]
    command: Option<ContextCommand>,
}

#[derive(Debug, clap::Subcommand)]
enum ContextCommand {
    /// Shows the address, organization, project and environment commands act on.
    Show,
    /// Selects an organization (--org), project (-p) and environment (-e), by name or id.
    #[command(after_help = CONTEXT_EXAMPLES)]
    Set,
}

pub async fn context(app: &mut App, args: ContextArgs) -> anyhow::Result<()> {
    match args.command.unwrap_or(ContextCommand::Show) {
        ContextCommand::Show => show_context(app),
        ContextCommand::Set => set_context(app).await,
    }
}

fn show_context(app: &App) -> anyhow::Result<()> {
    let ctx = &app.config.context;
    match app.format {
        Format::Json => {
            let mut value = serde_json::to_value(ctx)?;
            if let serde_json::Value::Object(map) = &mut value {
                map.insert("address".into(), app.address().unwrap_or_default().into());
                map.insert("logged_in".into(), app.config.token.is_some().into());
            }
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        Format::Table => {
            let show = |name: &Option<String>, id: &Option<String>| match (name, id) {
                (Some(name), Some(id)) => format!("{name} ({id})"),
                (None, Some(id)) => id.clone(),
                _ => "-".to_owned(),
            };
            let token = match &app.config.token {
                Some(token) => format!("{}…", token.chars().take(8).collect::<String>()),
                None => "- (run `slipway login`)".to_owned(),
            };
            output::table(
                &["KEY", "VALUE"],
                &[
                    vec![
                        "address".into(),
                        app.address().unwrap_or_else(|| "-".into()),
                    ],
                    vec!["token".into(), token],
                    vec![
                        "organization".into(),
                        show(&ctx.organization, &ctx.organization_id),
                    ],
                    vec!["project".into(), show(&ctx.project, &ctx.project_id)],
                    vec![
                        "environment".into(),
                        show(&ctx.environment, &ctx.environment_id),
                    ],
                ],
            );
        }
    }
    Ok(())
}

async fn set_context(app: &mut App) -> anyhow::Result<()> {
    if app.scope.organization.is_none()
        && app.scope.project.is_none()
        && app.scope.environment.is_none()
    {
        return Err(UserError::hinted(
            "nothing to set",
            "pass --org, -p/--project and/or -e/--environment",
        )
        .into());
    }
    let client = app.client()?;
    let mut ctx = app.config.context.clone();
    if let Some(value) = &app.scope.organization {
        let (id, name) = resolve_organization(&client, value).await?;
        if ctx.organization_id.as_deref() != Some(&id) {
            ctx = crate::config::Context::default();
        }
        ctx.organization_id = Some(id);
        ctx.organization = Some(name);
    }
    if let Some(value) = &app.scope.project {
        let organization = ctx.organization_id.clone().unwrap_or_default();
        if organization.is_empty() && !crate::app::is_id(value) {
            return Err(
                UserError::hinted("no organization is selected", "pass --org NAME too").into(),
            );
        }
        let project = resolve_project(&client, &organization, value).await?;
        if ctx.project_id.as_deref() != Some(&project.id) {
            ctx.environment_id = None;
            ctx.environment = None;
        }
        ctx.organization_id = Some(project.organization_id);
        ctx.project_id = Some(project.id);
        ctx.project = Some(project.name);
    }
    if let Some(value) = &app.scope.environment {
        let project = match ctx.project_id.clone() {
            Some(project) => project,
            None if crate::app::is_id(value) => String::new(),
            None => {
                return Err(
                    UserError::hinted("no project is selected", "pass -p PROJECT too").into(),
                );
            }
        };
        let environment = resolve_environment(&client, &project, value).await?;
        // An environment named by id may belong to another project than the context's.
        if environment.project_id != project {
            let owner = resolve_project(&client, "", &environment.project_id).await?;
            ctx.organization_id = Some(owner.organization_id);
            ctx.project_id = Some(owner.id);
            ctx.project = Some(owner.name);
        }
        ctx.environment_id = Some(environment.id);
        ctx.environment = Some(environment.name);
    }
    app.config.context = ctx;
    app.config.save()?;
    show_context(app)
}
