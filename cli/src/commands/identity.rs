//! Organizations, members and API tokens.

use prost_types::FieldMask;
use slipway_proto::identity::v1 as ipb;
use tonic::Request;

use crate::app::{App, list_organizations, resolve_organization};
use crate::client::all_pages;
use crate::errors::UserError;
use crate::output::{self, Format, age, label, or_dash, time};

pub const ORGANIZATION_EXAMPLES: &str = "Examples:
  slipway organization list
  slipway organization create acme --display-name \"Acme Corp\"   # needs a user login
  slipway organization get acme
  slipway organization update acme --display-name \"Acme\"
  slipway organization delete acme --force";

#[derive(Debug, clap::Subcommand)]
pub enum OrganizationCommand {
    /// Creates an organization (you become its owner).
    #[command(after_help = ORGANIZATION_EXAMPLES)]
    Create {
        name: String,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Lists the organizations you are a member of.
    #[command(after_help = ORGANIZATION_EXAMPLES)]
    List,
    /// Shows one organization (name or id).
    #[command(after_help = ORGANIZATION_EXAMPLES)]
    Get {
        #[arg(value_name = "ORGANIZATION")]
        target: String,
    },
    /// Renames an organization or changes its display name.
    #[command(after_help = ORGANIZATION_EXAMPLES)]
    Update {
        #[arg(value_name = "ORGANIZATION")]
        target: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Deletes an organization and everything it owns (with --force, its projects and
    /// clusters too).
    #[command(after_help = ORGANIZATION_EXAMPLES)]
    Delete {
        #[arg(value_name = "ORGANIZATION")]
        target: String,
        #[arg(long)]
        force: bool,
    },
}

fn organization_fields(o: &ipb::Organization) -> Vec<(&'static str, String)> {
    vec![
        ("id", o.id.clone()),
        ("name", o.name.clone()),
        ("display name", or_dash(&o.display_name)),
        ("owner", or_dash(&o.owner_user_id)),
        ("created", time(o.create_time.as_ref())),
        ("updated", time(o.update_time.as_ref())),
    ]
}

pub async fn organization(app: &App, command: OrganizationCommand) -> anyhow::Result<()> {
    let client = app.client()?;
    let format = app.format;
    match command {
        OrganizationCommand::Create { name, display_name } => {
            let created = client
                .organizations()
                .create_organization(Request::new(ipb::CreateOrganizationRequest {
                    organization: Some(ipb::Organization {
                        name,
                        display_name: display_name.unwrap_or_default(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                }))
                .await?
                .into_inner()
                .organization
                .unwrap_or_default();
            output::one(format, &created, &organization_fields(&created))
        }
        OrganizationCommand::List => {
            let organizations = list_organizations(&client).await?;
            output::list(
                format,
                &organizations,
                "organizations",
                &["NAME", "DISPLAY NAME", "ID", "AGE"],
                |o| {
                    vec![
                        o.name.clone(),
                        or_dash(&o.display_name),
                        o.id.clone(),
                        age(o.create_time.as_ref()),
                    ]
                },
            )
        }
        OrganizationCommand::Get { target } => {
            let found = get_organization(&client, &target).await?;
            output::one(format, &found, &organization_fields(&found))
        }
        OrganizationCommand::Update {
            target,
            name,
            display_name,
        } => {
            let mut found = get_organization(&client, &target).await?;
            let mut paths = Vec::new();
            if let Some(name) = name {
                found.name = name;
                paths.push("name".to_owned());
            }
            if let Some(display_name) = display_name {
                found.display_name = display_name;
                paths.push("display_name".to_owned());
            }
            nothing_to_update(&paths, "--name or --display-name")?;
            let updated = client
                .organizations()
                .update_organization(Request::new(ipb::UpdateOrganizationRequest {
                    organization: Some(found),
                    update_mask: Some(FieldMask { paths }),
                }))
                .await?
                .into_inner()
                .organization
                .unwrap_or_default();
            output::one(format, &updated, &organization_fields(&updated))
        }
        OrganizationCommand::Delete { target, force } => {
            let (id, name) = resolve_organization(&client, &target).await?;
            client
                .organizations()
                .delete_organization(Request::new(ipb::DeleteOrganizationRequest {
                    id,
                    etag: String::new(),
                    force,
                }))
                .await?;
            deleted(format, "organization", &name);
            Ok(())
        }
    }
}

async fn get_organization(
    client: &crate::client::Client,
    value: &str,
) -> anyhow::Result<ipb::Organization> {
    let (id, _) = resolve_organization(client, value).await?;
    Ok(client
        .organizations()
        .get_organization(Request::new(ipb::GetOrganizationRequest { id }))
        .await?
        .into_inner()
        .organization
        .unwrap_or_default())
}

/// An update with no flag is a mistake, not a no-op.
pub fn nothing_to_update(paths: &[String], flags: &str) -> anyhow::Result<()> {
    if paths.is_empty() {
        return Err(UserError::hinted("nothing to update", format!("pass {flags}")).into());
    }
    Ok(())
}

/// Confirms a delete to people; scripts get `{"deleted": …}`.
pub fn deleted(format: Format, kind: &str, name: &str) {
    match format {
        Format::Json => println!("{}", serde_json::json!({ "deleted": kind, "name": name })),
        Format::Table => println!("{kind} {name} deleted"),
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    Admin,
    Devops,
    Billing,
    Viewer,
}

impl RoleArg {
    fn role_ref(self) -> ipb::RoleRef {
        let builtin = match self {
            Self::Admin => ipb::BuiltinRole::Admin,
            Self::Devops => ipb::BuiltinRole::Devops,
            Self::Billing => ipb::BuiltinRole::Billing,
            Self::Viewer => ipb::BuiltinRole::Viewer,
        };
        ipb::RoleRef {
            role: Some(ipb::role_ref::Role::Builtin(builtin.into())),
        }
    }
}

fn role_label(role: Option<&ipb::RoleRef>) -> String {
    match role.and_then(|r| r.role.as_ref()) {
        Some(ipb::role_ref::Role::Builtin(value)) => label!(ipb::BuiltinRole, *value),
        Some(ipb::role_ref::Role::CustomRoleId(id)) => format!("custom:{id}"),
        None => "-".to_owned(),
    }
}

pub const MEMBER_EXAMPLES: &str = "Examples:
  slipway member create ada@example.com --role devops   # an invitation to accept
  slipway member list
  slipway member get 0190f1a2-…
  slipway member update 0190f1a2-… --role devops
  slipway member delete 0190f1a2-…";

#[derive(Debug, clap::Subcommand)]
pub enum MemberCommand {
    /// Invites a person by email; they become a member when they accept the invitation.
    #[command(after_help = MEMBER_EXAMPLES, visible_alias = "invite")]
    Create {
        email: String,
        #[arg(long, value_enum, default_value = "viewer")]
        role: RoleArg,
    },
    /// Lists the organization's members.
    #[command(after_help = MEMBER_EXAMPLES)]
    List,
    /// Shows one member (id or email).
    #[command(after_help = MEMBER_EXAMPLES)]
    Get { member: String },
    /// Gives a member another role.
    #[command(after_help = MEMBER_EXAMPLES)]
    Update {
        member: String,
        #[arg(long, value_enum)]
        role: RoleArg,
    },
    /// Removes a member from the organization.
    #[command(after_help = MEMBER_EXAMPLES)]
    Delete { member: String },
}

fn member_fields(m: &ipb::Member) -> Vec<(&'static str, String)> {
    vec![
        ("id", m.id.clone()),
        ("email", m.email.clone()),
        ("name", or_dash(&m.display_name)),
        ("role", role_label(m.role.as_ref())),
        ("user", m.user_id.clone()),
        ("joined", time(m.create_time.as_ref())),
    ]
}

async fn list_members(
    app: &App,
    client: &crate::client::Client,
) -> anyhow::Result<Vec<ipb::Member>> {
    let organization_id = app.organization_id(client).await?;
    Ok(all_pages(|page_token| {
        let mut members = client.members();
        let request = ipb::ListMembersRequest {
            organization_id: organization_id.clone(),
            page_size: 500,
            page_token,
            role: None,
        };
        async move {
            let response = members.list_members(request).await?.into_inner();
            Ok((response.members, response.next_page_token))
        }
    })
    .await?)
}

async fn find_member(
    app: &App,
    client: &crate::client::Client,
    value: &str,
) -> anyhow::Result<ipb::Member> {
    if crate::app::is_id(value) {
        return Ok(client
            .members()
            .get_member(Request::new(ipb::GetMemberRequest {
                id: value.to_owned(),
            }))
            .await?
            .into_inner()
            .member
            .unwrap_or_default());
    }
    list_members(app, client)
        .await?
        .into_iter()
        .find(|m| m.email == value)
        .ok_or_else(|| crate::app::not_found("member", value, "slipway member list"))
}

pub async fn member(app: &App, command: MemberCommand) -> anyhow::Result<()> {
    let client = app.client()?;
    let format = app.format;
    match command {
        MemberCommand::Create { email, role } => {
            let organization_id = app.organization_id(&client).await?;
            let created = client
                .invitations()
                .create_invitation(Request::new(ipb::CreateInvitationRequest {
                    organization_id,
                    invitation: Some(ipb::Invitation {
                        email,
                        role: Some(role.role_ref()),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                }))
                .await?
                .into_inner();
            match format {
                Format::Json => output::one(format, &created, &[]),
                Format::Table => {
                    let invitation = created.invitation.clone().unwrap_or_default();
                    println!("invitation:  {}", invitation.id);
                    println!("email:       {}", invitation.email);
                    println!("role:        {}", role_label(invitation.role.as_ref()));
                    println!("expires:     {}", time(invitation.expire_time.as_ref()));
                    println!("token:       {}", created.invitation_token);
                    eprintln!(
                        "send the token to {}: it is shown once, and accepting it makes them a member",
                        invitation.email
                    );
                    Ok(())
                }
            }
        }
        MemberCommand::List => {
            let members = list_members(app, &client).await?;
            output::list(
                format,
                &members,
                "members",
                &["EMAIL", "NAME", "ROLE", "ID"],
                |m| {
                    vec![
                        m.email.clone(),
                        or_dash(&m.display_name),
                        role_label(m.role.as_ref()),
                        m.id.clone(),
                    ]
                },
            )
        }
        MemberCommand::Get { member } => {
            let found = find_member(app, &client, &member).await?;
            output::one(format, &found, &member_fields(&found))
        }
        MemberCommand::Update { member, role } => {
            let found = find_member(app, &client, &member).await?;
            let updated = client
                .members()
                .update_member_role(Request::new(ipb::UpdateMemberRoleRequest {
                    id: found.id,
                    role: Some(role.role_ref()),
                    etag: found.etag,
                    request_id: String::new(),
                }))
                .await?
                .into_inner()
                .member
                .unwrap_or_default();
            output::one(format, &updated, &member_fields(&updated))
        }
        MemberCommand::Delete { member } => {
            let found = find_member(app, &client, &member).await?;
            client
                .members()
                .remove_member(Request::new(ipb::RemoveMemberRequest {
                    id: found.id,
                    etag: String::new(),
                }))
                .await?;
            deleted(format, "member", &found.email);
            Ok(())
        }
    }
}

pub const TOKEN_EXAMPLES: &str = "Examples:
  slipway token create ci --role devops --expires-in 90d   # prints the secret once
  slipway token list
  slipway token get ci
  slipway token delete ci                                  # revokes it at once";

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Creates an API token and prints its secret (shown once).
    #[command(after_help = TOKEN_EXAMPLES)]
    Create {
        name: String,
        #[arg(long, value_enum, default_value = "devops")]
        role: RoleArg,
        #[arg(long)]
        description: Option<String>,
        /// When it stops working: a span from now (`30d`, `12h`) or an RFC 3339 time.
        #[arg(long, value_name = "WHEN")]
        expires_in: Option<String>,
    },
    /// Lists the organization's API tokens (never their secrets).
    #[command(after_help = TOKEN_EXAMPLES)]
    List,
    /// Shows one API token (name or id).
    #[command(after_help = TOKEN_EXAMPLES)]
    Get { token: String },
    /// Tokens are immutable: revoke one and create another instead.
    #[command(after_help = TOKEN_EXAMPLES)]
    Update { token: String },
    /// Revokes an API token: it stops working at once.
    #[command(after_help = TOKEN_EXAMPLES, visible_alias = "revoke")]
    Delete { token: String },
}

fn token_fields(t: &ipb::ApiToken) -> Vec<(&'static str, String)> {
    vec![
        ("id", t.id.clone()),
        ("name", t.name.clone()),
        ("description", or_dash(&t.description)),
        ("role", role_label(t.role.as_ref())),
        ("secret starts", t.secret_hint.clone()),
        ("expires", time(t.expire_time.as_ref())),
        ("last used", time(t.last_use_time.as_ref())),
        ("created", time(t.create_time.as_ref())),
    ]
}

async fn list_tokens(
    app: &App,
    client: &crate::client::Client,
) -> anyhow::Result<Vec<ipb::ApiToken>> {
    let organization_id = app.organization_id(client).await?;
    Ok(all_pages(|page_token| {
        let mut tokens = client.tokens();
        let request = ipb::ListApiTokensRequest {
            organization_id: organization_id.clone(),
            page_size: 500,
            page_token,
        };
        async move {
            let response = tokens.list_api_tokens(request).await?.into_inner();
            Ok((response.api_tokens, response.next_page_token))
        }
    })
    .await?)
}

async fn find_token(
    app: &App,
    client: &crate::client::Client,
    value: &str,
) -> anyhow::Result<ipb::ApiToken> {
    if crate::app::is_id(value) {
        return Ok(client
            .tokens()
            .get_api_token(Request::new(ipb::GetApiTokenRequest {
                id: value.to_owned(),
            }))
            .await?
            .into_inner()
            .api_token
            .unwrap_or_default());
    }
    list_tokens(app, client)
        .await?
        .into_iter()
        .find(|t| t.name == value)
        .ok_or_else(|| crate::app::not_found("token", value, "slipway token list"))
}

pub async fn token(app: &App, command: TokenCommand) -> anyhow::Result<()> {
    let client = app.client()?;
    let format = app.format;
    match command {
        TokenCommand::Create {
            name,
            role,
            description,
            expires_in,
        } => {
            let organization_id = app.organization_id(&client).await?;
            let expire_time = expires_in
                .as_deref()
                .map(crate::time::future_time)
                .transpose()?;
            let created = client
                .tokens()
                .create_api_token(Request::new(ipb::CreateApiTokenRequest {
                    organization_id,
                    api_token: Some(ipb::ApiToken {
                        name,
                        description: description.unwrap_or_default(),
                        role: Some(role.role_ref()),
                        expire_time,
                        ..Default::default()
                    }),
                    request_id: String::new(),
                }))
                .await?
                .into_inner();
            match format {
                Format::Json => output::one(format, &created, &[]),
                Format::Table => {
                    let token = created.api_token.clone().unwrap_or_default();
                    output::one(format, &token, &token_fields(&token))?;
                    println!("secret:         {}", created.secret);
                    eprintln!("the secret is shown once: store it now");
                    Ok(())
                }
            }
        }
        TokenCommand::List => {
            let tokens = list_tokens(app, &client).await?;
            output::list(
                format,
                &tokens,
                "API tokens",
                &["NAME", "ROLE", "SECRET STARTS", "EXPIRES", "ID"],
                |t| {
                    vec![
                        t.name.clone(),
                        role_label(t.role.as_ref()),
                        t.secret_hint.clone(),
                        time(t.expire_time.as_ref()),
                        t.id.clone(),
                    ]
                },
            )
        }
        TokenCommand::Get { token } => {
            let found = find_token(app, &client, &token).await?;
            output::one(format, &found, &token_fields(&found))
        }
        TokenCommand::Update { .. } => Err(UserError::hinted(
            "API tokens are immutable",
            "revoke it (`slipway token delete NAME`) and create another",
        )
        .into()),
        TokenCommand::Delete { token } => {
            let found = find_token(app, &client, &token).await?;
            client
                .tokens()
                .revoke_api_token(Request::new(ipb::RevokeApiTokenRequest {
                    id: found.id,
                    request_id: String::new(),
                }))
                .await?;
            deleted(format, "API token", &found.name);
            Ok(())
        }
    }
}
