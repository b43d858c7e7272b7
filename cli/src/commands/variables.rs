//! Variables and secrets at the project, environment or service scope, and what a service
//! finally sees (`effective`). A secret's value is written, never shown back.

use prost_types::FieldMask;
use slipway_proto::catalog::v1 as cpb;
use tonic::Request;

use crate::app::App;
use crate::client::{Client, all_pages};
use crate::commands::identity::deleted;
use crate::errors::UserError;
use crate::output::{self, label, or_dash, time};

pub const VARIABLE_EXAMPLES: &str = "Examples:
  slipway variable set LOG_LEVEL=debug                       # environment scope
  slipway variable set DATABASE_PASSWORD=s3cret --secret
  slipway variable set FEATURE_X=on --scope project
  slipway variable set PORT=8080 --service web               # service scope
  slipway variable list
  slipway variable effective --service web                   # what web runs with
  slipway variable delete LOG_LEVEL";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScopeArg {
    Project,
    Environment,
    Service,
}

/// Where a variable lives: the scope flag (default: service when --service is given,
/// else environment).
#[derive(Debug, clap::Args)]
pub struct VariableScopeArgs {
    #[arg(long, value_enum)]
    scope: Option<ScopeArg>,
    /// The service (name or id), for the service scope.
    #[arg(long)]
    service: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum VariableCommand {
    /// Creates or changes variables (KEY=VALUE, several at once).
    #[command(after_help = VARIABLE_EXAMPLES, visible_aliases = ["create", "update"])]
    Set {
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
        /// Store the values as secrets: encrypted at rest, never shown back.
        #[arg(long)]
        secret: bool,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        scope: VariableScopeArgs,
    },
    /// Lists the variables of one scope (secrets without their value).
    #[command(after_help = VARIABLE_EXAMPLES)]
    List {
        #[command(flatten)]
        scope: VariableScopeArgs,
    },
    /// Shows one variable (key or id).
    #[command(after_help = VARIABLE_EXAMPLES)]
    Get {
        key: String,
        #[command(flatten)]
        scope: VariableScopeArgs,
    },
    /// Deletes a variable (key or id).
    #[command(after_help = VARIABLE_EXAMPLES)]
    Delete {
        key: String,
        /// Delete even when aliases point at it.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        scope: VariableScopeArgs,
    },
    /// The variables a service runs with, every scope merged, and where each comes from.
    #[command(after_help = VARIABLE_EXAMPLES)]
    Effective {
        /// The service (name or id).
        #[arg(long)]
        service: String,
    },
}

#[derive(Clone, Copy)]
enum Scope<'a> {
    Project(&'a str),
    Environment(&'a str),
    Service(&'a str),
}

async fn scope_id(
    app: &App,
    client: &Client,
    args: &VariableScopeArgs,
) -> anyhow::Result<(ScopeArg, String)> {
    let scope = args.scope.unwrap_or(if args.service.is_some() {
        ScopeArg::Service
    } else {
        ScopeArg::Environment
    });
    let id = match scope {
        ScopeArg::Project => app.project_id(client).await?,
        ScopeArg::Environment => app.environment_id(client).await?,
        ScopeArg::Service => {
            let service = args.service.as_deref().ok_or_else(|| {
                UserError::hinted("the service scope needs a service", "pass --service NAME")
            })?;
            app.service(client, service).await?.id
        }
    };
    Ok((scope, id))
}

fn scope_of(kind: ScopeArg, id: &str) -> Scope<'_> {
    match kind {
        ScopeArg::Project => Scope::Project(id),
        ScopeArg::Environment => Scope::Environment(id),
        ScopeArg::Service => Scope::Service(id),
    }
}

async fn list_variables(
    client: &Client,
    scope: Scope<'_>,
    key_prefix: &str,
) -> anyhow::Result<Vec<cpb::Variable>> {
    use cpb::list_variables_request::Scope as S;
    let scope = match scope {
        Scope::Project(id) => S::ProjectId(id.to_owned()),
        Scope::Environment(id) => S::EnvironmentId(id.to_owned()),
        Scope::Service(id) => S::ServiceId(id.to_owned()),
    };
    Ok(all_pages(|page_token| {
        let mut variables = client.variables();
        let request = cpb::ListVariablesRequest {
            scope: Some(scope.clone()),
            page_size: 500,
            page_token,
            kind: 0,
            key_prefix: key_prefix.to_owned(),
        };
        async move {
            let response = variables.list_variables(request).await?.into_inner();
            Ok((response.variables, response.next_page_token))
        }
    })
    .await?)
}

async fn find_variable(
    client: &Client,
    scope: Scope<'_>,
    key: &str,
) -> anyhow::Result<Option<cpb::Variable>> {
    if crate::app::is_id(key) {
        let variable = client
            .variables()
            .get_variable(Request::new(cpb::GetVariableRequest { id: key.to_owned() }))
            .await?
            .into_inner()
            .variable;
        return Ok(variable);
    }
    Ok(list_variables(client, scope, key)
        .await?
        .into_iter()
        .find(|v| v.key == key))
}

/// A value cell: secrets never have one to show.
fn shown_value(value: &str, is_secret: bool) -> String {
    if is_secret {
        "(secret)".to_owned()
    } else {
        value.to_owned()
    }
}

fn variable_fields(v: &cpb::Variable) -> Vec<(&'static str, String)> {
    let scope = match &v.scope {
        Some(cpb::variable::Scope::ProjectId(id)) => format!("project {id}"),
        Some(cpb::variable::Scope::EnvironmentId(id)) => format!("environment {id}"),
        Some(cpb::variable::Scope::ServiceId(id)) => format!("service {id}"),
        None => "-".to_owned(),
    };
    vec![
        ("id", v.id.clone()),
        ("key", v.key.clone()),
        ("value", shown_value(&v.value, v.is_secret)),
        ("secret", v.is_secret.to_string()),
        ("kind", label!(cpb::VariableKind, v.kind)),
        ("scope", scope),
        ("description", or_dash(&v.description)),
        ("updated", time(v.update_time.as_ref())),
    ]
}

fn split_pair(pair: &str) -> anyhow::Result<(&str, &str)> {
    pair.split_once('=')
        .filter(|(key, _)| !key.is_empty())
        .ok_or_else(|| {
            UserError::hinted(
                format!("{pair:?} is not KEY=VALUE"),
                "write it as KEY=VALUE, e.g. LOG_LEVEL=debug",
            )
            .into()
        })
}

pub async fn variable(app: &App, command: VariableCommand) -> anyhow::Result<()> {
    let client = app.client()?;
    let format = app.format;
    match command {
        VariableCommand::Set {
            pairs,
            secret,
            description,
            scope,
        } => {
            let pairs = pairs
                .iter()
                .map(|pair| split_pair(pair))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let (kind, id) = scope_id(app, &client, &scope).await?;
            let mut written = Vec::new();
            for (key, value) in pairs {
                written.push(
                    set_one(
                        &client,
                        scope_of(kind, &id),
                        key,
                        value,
                        secret,
                        description.as_deref(),
                    )
                    .await?,
                );
            }
            output::list(
                format,
                &written,
                "variables",
                &["KEY", "VALUE", "SECRET", "ID"],
                |v| {
                    vec![
                        v.key.clone(),
                        shown_value(&v.value, v.is_secret),
                        v.is_secret.to_string(),
                        v.id.clone(),
                    ]
                },
            )
        }
        VariableCommand::List { scope } => {
            let (kind, id) = scope_id(app, &client, &scope).await?;
            let variables = list_variables(&client, scope_of(kind, &id), "").await?;
            output::list(
                format,
                &variables,
                "variables",
                &["KEY", "VALUE", "KIND", "SECRET", "ID"],
                |v| {
                    vec![
                        v.key.clone(),
                        shown_value(&v.value, v.is_secret),
                        label!(cpb::VariableKind, v.kind),
                        v.is_secret.to_string(),
                        v.id.clone(),
                    ]
                },
            )
        }
        VariableCommand::Get { key, scope } => {
            let (kind, id) = scope_id(app, &client, &scope).await?;
            let found = find_variable(&client, scope_of(kind, &id), &key)
                .await?
                .ok_or_else(|| crate::app::not_found("variable", &key, "slipway variable list"))?;
            output::one(format, &found, &variable_fields(&found))
        }
        VariableCommand::Delete { key, force, scope } => {
            let (kind, id) = scope_id(app, &client, &scope).await?;
            let found = find_variable(&client, scope_of(kind, &id), &key)
                .await?
                .ok_or_else(|| crate::app::not_found("variable", &key, "slipway variable list"))?;
            client
                .variables()
                .delete_variable(Request::new(cpb::DeleteVariableRequest {
                    id: found.id,
                    etag: String::new(),
                    force,
                }))
                .await?;
            deleted(format, "variable", &found.key);
            Ok(())
        }
        VariableCommand::Effective { service } => {
            let service = app.service(&client, &service).await?;
            let variables = client
                .variables()
                .list_effective_variables(Request::new(cpb::ListEffectiveVariablesRequest {
                    service_id: service.id,
                }))
                .await?
                .into_inner()
                .variables;
            output::list(
                format,
                &variables,
                "variables",
                &["KEY", "VALUE", "SECRET", "FROM"],
                |v| {
                    let from = v
                        .source
                        .as_ref()
                        .map(|s| label!(cpb::VariableScope, s.scope).to_lowercase())
                        .unwrap_or_else(|| "-".to_owned());
                    vec![
                        v.key.clone(),
                        shown_value(&v.value, v.is_secret),
                        v.is_secret.to_string(),
                        from,
                    ]
                },
            )
        }
    }
}

/// Creates `key`, or changes its value when it exists at that scope.
async fn set_one(
    client: &Client,
    scope: Scope<'_>,
    key: &str,
    value: &str,
    secret: bool,
    description: Option<&str>,
) -> anyhow::Result<cpb::Variable> {
    if let Some(mut existing) = find_variable(client, scope, key).await? {
        if existing.is_secret != secret {
            return Err(UserError::hinted(
                format!(
                    "{key} exists and {} a secret",
                    if existing.is_secret { "is" } else { "is not" }
                ),
                format!("delete it first (`slipway variable delete {key}`) to change that"),
            )
            .into());
        }
        let mut paths = vec!["value".to_owned()];
        existing.value = value.to_owned();
        if let Some(description) = description {
            existing.description = description.to_owned();
            paths.push("description".to_owned());
        }
        return Ok(client
            .variables()
            .update_variable(Request::new(cpb::UpdateVariableRequest {
                variable: Some(existing),
                update_mask: Some(FieldMask { paths }),
            }))
            .await?
            .into_inner()
            .variable
            .unwrap_or_default());
    }
    use cpb::create_variable_request::Scope as S;
    let scope = match scope {
        Scope::Project(id) => S::ProjectId(id.to_owned()),
        Scope::Environment(id) => S::EnvironmentId(id.to_owned()),
        Scope::Service(id) => S::ServiceId(id.to_owned()),
    };
    Ok(client
        .variables()
        .create_variable(Request::new(cpb::CreateVariableRequest {
            scope: Some(scope),
            variable: Some(cpb::Variable {
                key: key.to_owned(),
                kind: cpb::VariableKind::Value.into(),
                value: value.to_owned(),
                is_secret: secret,
                description: description.unwrap_or_default().to_owned(),
                ..Default::default()
            }),
            request_id: String::new(),
        }))
        .await?
        .into_inner()
        .variable
        .unwrap_or_default())
}
