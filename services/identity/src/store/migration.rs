//! The identity schema, as sea-orm-migration steps that run unchanged on PostgreSQL and
//! SQLite.
//!
//! Portability rules followed here: ids are text (UUIDv7), times are
//! `timestamp_with_time_zone` (RFC 3339 text on SQLite, compared correctly because every
//! value is written in one format at microsecond precision), every constraint is declared
//! in `CREATE TABLE` (SQLite cannot add foreign keys later), and the partial unique indexes
//! use only syntax both backends share.
//!
//! Integrity the API relies on is enforced by the database, not only by the code, so a
//! race between two requests cannot break it:
//!
//! - names unique in their scope (organizations; roles and API tokens per organization);
//! - one membership per (organization, user), and at most one `OWNER` per organization
//!   (partial unique index);
//! - at most one pending invitation per (organization, email);
//! - a member's or token's custom role belongs to the same organization (composite foreign
//!   key to `roles (organization_id, id)`), and cannot be deleted while held;
//! - a role is exactly one of built-in name or custom role id (check constraint).
//!
//! Audit events have no foreign key to their organization: the log outlives a deleted
//! organization for its retention period.
//!
//! Released migrations are never edited; changes come as new steps.

use slipway_db::sea_orm;
use slipway_db::sea_orm_migration::async_trait;
use slipway_db::sea_orm_migration::prelude::*;

/// Creates every identity table.
pub struct CreateIdentitySchema;

impl MigrationName for CreateIdentitySchema {
    fn name(&self) -> &str {
        "m0001_create_identity_schema"
    }
}

#[derive(Clone, Copy, DeriveIden)]
enum Users {
    Table,
    Id,
    OidcIssuer,
    OidcSubject,
    Email,
    EmailKey,
    DisplayName,
    CreateTime,
    UpdateTime,
}

#[derive(Clone, Copy, DeriveIden)]
enum Organizations {
    Table,
    Id,
    Name,
    DisplayName,
    OwnerUserId,
    CreateTime,
    UpdateTime,
    Etag,
}

#[derive(Clone, Copy, DeriveIden)]
enum Roles {
    Table,
    Id,
    OrganizationId,
    Name,
    Description,
    Grants,
    CreateTime,
    UpdateTime,
    Etag,
}

#[derive(Clone, Copy, DeriveIden)]
enum Memberships {
    Table,
    Id,
    OrganizationId,
    UserId,
    BuiltinRole,
    CustomRoleId,
    CreateTime,
    UpdateTime,
    Etag,
}

#[derive(Clone, Copy, DeriveIden)]
enum Invitations {
    Table,
    Id,
    OrganizationId,
    Email,
    EmailKey,
    BuiltinRole,
    CustomRoleId,
    TokenHash,
    Status,
    InviterKind,
    InviterId,
    InviterDisplayName,
    ExpireTime,
    MemberId,
    CloseTime,
    CreateTime,
    UpdateTime,
}

#[derive(Clone, Copy, DeriveIden)]
enum ApiTokens {
    Table,
    Id,
    OrganizationId,
    Name,
    Description,
    BuiltinRole,
    CustomRoleId,
    SecretHash,
    SecretHint,
    ExpireTime,
    LastUseTime,
    CreatorKind,
    CreatorId,
    CreatorDisplayName,
    CreateTime,
}

#[derive(Clone, Copy, DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    OrganizationId,
    ActorKind,
    ActorId,
    ActorDisplayName,
    Action,
    Method,
    TargetKind,
    TargetId,
    TargetProjectId,
    TargetEnvironmentId,
    TargetEnvironmentMode,
    TargetClusterId,
    EventTime,
    OriginIp,
    OriginUserAgent,
    StatusCode,
    ErrorReason,
}

/// Length of a UUID in text form.
const ID_LEN: u32 = 36;
/// A DNS label.
const NAME_LEN: u32 = 63;
/// An email address (RFC 5321 path limit).
const EMAIL_LEN: u32 = 254;
/// Enum-like values (`OWNER`, `API_TOKEN`, `PENDING`, …).
const ENUM_LEN: u32 = 32;

fn id(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).string_len(ID_LEN).not_null().to_owned()
}

fn time(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn text(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).text().not_null().to_owned()
}

fn string(col: impl IntoIden, len: u32) -> ColumnDef {
    ColumnDef::new(col).string_len(len).not_null().to_owned()
}

fn optional_string(col: impl IntoIden, len: u32) -> ColumnDef {
    ColumnDef::new(col).string_len(len).null().to_owned()
}

/// Exactly one of the two role columns is set.
fn one_role(builtin: impl IntoIden + Clone, custom: impl IntoIden + Clone) -> Condition {
    Condition::any()
        .add(
            Condition::all()
                .add(Expr::col(builtin.clone()).is_not_null())
                .add(Expr::col(custom.clone()).is_null()),
        )
        .add(
            Condition::all()
                .add(Expr::col(builtin).is_null())
                .add(Expr::col(custom).is_not_null()),
        )
}

#[async_trait::async_trait]
impl MigrationTrait for CreateIdentitySchema {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // users
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(id(Users::Id).primary_key())
                    .col(text(Users::OidcIssuer))
                    .col(text(Users::OidcSubject))
                    .col(string(Users::Email, EMAIL_LEN))
                    .col(string(Users::EmailKey, EMAIL_LEN))
                    .col(text(Users::DisplayName))
                    .col(time(Users::CreateTime))
                    .col(time(Users::UpdateTime))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_users_oidc_identity")
                    .table(Users::Table)
                    .col(Users::OidcIssuer)
                    .col(Users::OidcSubject)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_users_email_key")
                    .table(Users::Table)
                    .col(Users::EmailKey)
                    .to_owned(),
            )
            .await?;

        // organizations
        manager
            .create_table(
                Table::create()
                    .table(Organizations::Table)
                    .col(id(Organizations::Id).primary_key())
                    .col(string(Organizations::Name, NAME_LEN).unique_key())
                    .col(text(Organizations::DisplayName))
                    .col(id(Organizations::OwnerUserId))
                    .col(time(Organizations::CreateTime))
                    .col(time(Organizations::UpdateTime))
                    .col(string(Organizations::Etag, ENUM_LEN))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_organizations_owner")
                            .from(Organizations::Table, Organizations::OwnerUserId)
                            .to(Users::Table, Users::Id),
                    )
                    .to_owned(),
            )
            .await?;

        // roles: before memberships and api_tokens, whose foreign keys point here.
        manager
            .create_table(
                Table::create()
                    .table(Roles::Table)
                    .col(id(Roles::Id).primary_key())
                    .col(id(Roles::OrganizationId))
                    .col(string(Roles::Name, NAME_LEN))
                    .col(text(Roles::Description))
                    .col(ColumnDef::new(Roles::Grants).json_binary().not_null())
                    .col(time(Roles::CreateTime))
                    .col(time(Roles::UpdateTime))
                    .col(string(Roles::Etag, ENUM_LEN))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_roles_organization")
                            .from(Roles::Table, Roles::OrganizationId)
                            .to(Organizations::Table, Organizations::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_roles_name")
                    .table(Roles::Table)
                    .col(Roles::OrganizationId)
                    .col(Roles::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // The target of the same-organization foreign keys below.
        manager
            .create_index(
                Index::create()
                    .name("ux_roles_organization_id")
                    .table(Roles::Table)
                    .col(Roles::OrganizationId)
                    .col(Roles::Id)
                    .unique()
                    .to_owned(),
            )
            .await?;

        // memberships
        manager
            .create_table(
                Table::create()
                    .table(Memberships::Table)
                    .col(id(Memberships::Id).primary_key())
                    .col(id(Memberships::OrganizationId))
                    .col(id(Memberships::UserId))
                    .col(optional_string(Memberships::BuiltinRole, ENUM_LEN))
                    .col(optional_string(Memberships::CustomRoleId, ID_LEN))
                    .col(time(Memberships::CreateTime))
                    .col(time(Memberships::UpdateTime))
                    .col(string(Memberships::Etag, ENUM_LEN))
                    .check(Check::named(
                        "ck_memberships_one_role",
                        one_role(Memberships::BuiltinRole, Memberships::CustomRoleId),
                    ))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_memberships_organization")
                            .from(Memberships::Table, Memberships::OrganizationId)
                            .to(Organizations::Table, Organizations::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_memberships_user")
                            .from(Memberships::Table, Memberships::UserId)
                            .to(Users::Table, Users::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_memberships_custom_role")
                            .from(
                                Memberships::Table,
                                (Memberships::OrganizationId, Memberships::CustomRoleId),
                            )
                            .to(Roles::Table, (Roles::OrganizationId, Roles::Id)),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_memberships_user")
                    .table(Memberships::Table)
                    .col(Memberships::OrganizationId)
                    .col(Memberships::UserId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // A user's organizations, for ListOrganizations and Authenticate.
        manager
            .create_index(
                Index::create()
                    .name("ix_memberships_user_id")
                    .table(Memberships::Table)
                    .col(Memberships::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_memberships_one_owner")
                    .table(Memberships::Table)
                    .col(Memberships::OrganizationId)
                    .unique()
                    .and_where(Expr::col(Memberships::BuiltinRole).eq("OWNER"))
                    .to_owned(),
            )
            .await?;

        // invitations: no foreign key to roles, so that closed invitations may keep naming
        // a role deleted since; pending ones are checked by the code before a role goes.
        manager
            .create_table(
                Table::create()
                    .table(Invitations::Table)
                    .col(id(Invitations::Id).primary_key())
                    .col(id(Invitations::OrganizationId))
                    .col(string(Invitations::Email, EMAIL_LEN))
                    .col(string(Invitations::EmailKey, EMAIL_LEN))
                    .col(optional_string(Invitations::BuiltinRole, ENUM_LEN))
                    .col(optional_string(Invitations::CustomRoleId, ID_LEN))
                    .col(
                        ColumnDef::new(Invitations::TokenHash)
                            .char_len(64)
                            .not_null(),
                    )
                    .col(string(Invitations::Status, ENUM_LEN))
                    .col(string(Invitations::InviterKind, ENUM_LEN))
                    .col(text(Invitations::InviterId))
                    .col(text(Invitations::InviterDisplayName))
                    .col(time(Invitations::ExpireTime))
                    .col(optional_string(Invitations::MemberId, ID_LEN))
                    .col(
                        ColumnDef::new(Invitations::CloseTime)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(time(Invitations::CreateTime))
                    .col(time(Invitations::UpdateTime))
                    .check(Check::named(
                        "ck_invitations_one_role",
                        one_role(Invitations::BuiltinRole, Invitations::CustomRoleId),
                    ))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_invitations_organization")
                            .from(Invitations::Table, Invitations::OrganizationId)
                            .to(Organizations::Table, Organizations::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_invitations_token_hash")
                    .table(Invitations::Table)
                    .col(Invitations::TokenHash)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_invitations_organization")
                    .table(Invitations::Table)
                    .col(Invitations::OrganizationId)
                    .col(Invitations::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_invitations_pending_email")
                    .table(Invitations::Table)
                    .col(Invitations::OrganizationId)
                    .col(Invitations::EmailKey)
                    .unique()
                    .and_where(Expr::col(Invitations::Status).eq("PENDING"))
                    .to_owned(),
            )
            .await?;

        // api_tokens
        manager
            .create_table(
                Table::create()
                    .table(ApiTokens::Table)
                    .col(id(ApiTokens::Id).primary_key())
                    .col(id(ApiTokens::OrganizationId))
                    .col(string(ApiTokens::Name, NAME_LEN))
                    .col(text(ApiTokens::Description))
                    .col(optional_string(ApiTokens::BuiltinRole, ENUM_LEN))
                    .col(optional_string(ApiTokens::CustomRoleId, ID_LEN))
                    .col(
                        ColumnDef::new(ApiTokens::SecretHash)
                            .char_len(64)
                            .not_null(),
                    )
                    .col(text(ApiTokens::SecretHint))
                    .col(
                        ColumnDef::new(ApiTokens::ExpireTime)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(ApiTokens::LastUseTime)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(string(ApiTokens::CreatorKind, ENUM_LEN))
                    .col(text(ApiTokens::CreatorId))
                    .col(text(ApiTokens::CreatorDisplayName))
                    .col(time(ApiTokens::CreateTime))
                    .check(Check::named(
                        "ck_api_tokens_one_role",
                        one_role(ApiTokens::BuiltinRole, ApiTokens::CustomRoleId),
                    ))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_api_tokens_organization")
                            .from(ApiTokens::Table, ApiTokens::OrganizationId)
                            .to(Organizations::Table, Organizations::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_api_tokens_custom_role")
                            .from(
                                ApiTokens::Table,
                                (ApiTokens::OrganizationId, ApiTokens::CustomRoleId),
                            )
                            .to(Roles::Table, (Roles::OrganizationId, Roles::Id)),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_api_tokens_secret_hash")
                    .table(ApiTokens::Table)
                    .col(ApiTokens::SecretHash)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_api_tokens_name")
                    .table(ApiTokens::Table)
                    .col(ApiTokens::OrganizationId)
                    .col(ApiTokens::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;

        // audit_events
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .col(id(AuditEvents::Id).primary_key())
                    .col(id(AuditEvents::OrganizationId))
                    .col(string(AuditEvents::ActorKind, ENUM_LEN))
                    .col(text(AuditEvents::ActorId))
                    .col(text(AuditEvents::ActorDisplayName))
                    .col(text(AuditEvents::Action))
                    .col(text(AuditEvents::Method))
                    .col(optional_string(AuditEvents::TargetKind, ENUM_LEN))
                    .col(ColumnDef::new(AuditEvents::TargetId).text().null())
                    .col(optional_string(AuditEvents::TargetProjectId, ID_LEN))
                    .col(optional_string(AuditEvents::TargetEnvironmentId, ID_LEN))
                    .col(optional_string(
                        AuditEvents::TargetEnvironmentMode,
                        ENUM_LEN,
                    ))
                    .col(optional_string(AuditEvents::TargetClusterId, ID_LEN))
                    .col(time(AuditEvents::EventTime))
                    .col(text(AuditEvents::OriginIp))
                    .col(text(AuditEvents::OriginUserAgent))
                    .col(string(AuditEvents::StatusCode, ENUM_LEN))
                    .col(text(AuditEvents::ErrorReason))
                    .to_owned(),
            )
            .await?;
        // Newest-first listing of one organization, and time-range filters, are one range
        // scan of this index.
        manager
            .create_index(
                Index::create()
                    .name("ix_audit_events_organization_time")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::OrganizationId)
                    .col(AuditEvents::EventTime)
                    .col(AuditEvents::Id)
                    .to_owned(),
            )
            .await?;
        // Retention deletes by time across organizations.
        manager
            .create_index(
                Index::create()
                    .name("ix_audit_events_time")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::EventTime)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuditEvents::Table.into_iden(),
            ApiTokens::Table.into_iden(),
            Invitations::Table.into_iden(),
            Memberships::Table.into_iden(),
            Roles::Table.into_iden(),
            Organizations::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

/// Adds `identity_request_ids`: the `request_id` idempotency keys of the creates.
///
/// One row per (scope, method, request_id), written in the transaction of the create it
/// names, so a create and its key commit or roll back together; the primary key makes a
/// concurrent repeat wait for the first and then find its row. The scope is the
/// organization the resource is created in, or the caller's user id for
/// CreateOrganization. There is no foreign key to the resource: it may be deleted later,
/// and a repeat then answers as a Get of it would.
pub struct CreateRequestIds;

impl MigrationName for CreateRequestIds {
    fn name(&self) -> &str {
        "m0002_create_identity_request_ids"
    }
}

#[derive(Clone, Copy, DeriveIden)]
enum IdentityRequestIds {
    Table,
    Scope,
    Method,
    RequestId,
    ResourceId,
    CreateTime,
}

/// The longest method name recorded (a gRPC method name, `CreateOrganization`).
const METHOD_LEN: u32 = 64;
/// The longest `request_id` the API accepts.
const REQUEST_ID_LEN: u32 = 64;

#[async_trait::async_trait]
impl MigrationTrait for CreateRequestIds {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(IdentityRequestIds::Table)
                    .col(id(IdentityRequestIds::Scope))
                    .col(string(IdentityRequestIds::Method, METHOD_LEN))
                    .col(string(IdentityRequestIds::RequestId, REQUEST_ID_LEN))
                    .col(id(IdentityRequestIds::ResourceId))
                    .col(time(IdentityRequestIds::CreateTime))
                    .primary_key(
                        Index::create()
                            .name("pk_identity_request_ids")
                            .col(IdentityRequestIds::Scope)
                            .col(IdentityRequestIds::Method)
                            .col(IdentityRequestIds::RequestId),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(IdentityRequestIds::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

/// Adds `identity_action_results`: the answers of actions (revoke, accept, transfer, role
/// change) that carried a `request_id`, so a repeat returns the first result.
///
/// Actions change state, so a repeat cannot simply run again (a second revoke of one token
/// would fail, a second transfer would refuse the new owner); the encoded response of the
/// first success is kept instead. The scope is the caller: a key is the client's own, and
/// another caller reusing it learns nothing. Failed actions record nothing, so a retry of
/// a failure runs anew.
pub struct CreateActionResults;

impl MigrationName for CreateActionResults {
    fn name(&self) -> &str {
        "m0003_create_identity_action_results"
    }
}

#[derive(Clone, Copy, DeriveIden)]
enum IdentityActionResults {
    Table,
    Scope,
    Method,
    RequestId,
    Response,
    CreateTime,
}

#[async_trait::async_trait]
impl MigrationTrait for CreateActionResults {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(IdentityActionResults::Table)
                    .col(id(IdentityActionResults::Scope))
                    .col(string(IdentityActionResults::Method, METHOD_LEN))
                    .col(string(IdentityActionResults::RequestId, REQUEST_ID_LEN))
                    .col(
                        ColumnDef::new(IdentityActionResults::Response)
                            .blob()
                            .not_null()
                            .to_owned(),
                    )
                    .col(time(IdentityActionResults::CreateTime))
                    .primary_key(
                        Index::create()
                            .name("pk_identity_action_results")
                            .col(IdentityActionResults::Scope)
                            .col(IdentityActionResults::Method)
                            .col(IdentityActionResults::RequestId),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(IdentityActionResults::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

/// Adds `identity_owner_credentials`: hashes of the owner credentials bootstrap prints.
///
/// A fresh install has no OIDC sign-in, yet its first organization needs someone who acts
/// as its OWNER (API tokens never hold OWNER). Bootstrap hands out one `slp_` credential
/// that signs in as the bootstrap owner *user*; only its SHA-256 is kept, here, so every
/// identity replica recognises it.
pub struct CreateOwnerCredentials;

impl MigrationName for CreateOwnerCredentials {
    fn name(&self) -> &str {
        "m0004_create_identity_owner_credentials"
    }
}

#[derive(Clone, Copy, DeriveIden)]
enum IdentityOwnerCredentials {
    Table,
    SecretHash,
    UserId,
    CreateTime,
}

#[async_trait::async_trait]
impl MigrationTrait for CreateOwnerCredentials {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(IdentityOwnerCredentials::Table)
                    .col(string(IdentityOwnerCredentials::SecretHash, 64).primary_key())
                    .col(id(IdentityOwnerCredentials::UserId))
                    .col(time(IdentityOwnerCredentials::CreateTime))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(IdentityOwnerCredentials::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
