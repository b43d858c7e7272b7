//! sea-orm entities: one module per table, mirroring the schema that [`super::migration`]
//! creates.
//!
//! They are the store's private row types; callers get the domain values of
//! [`super::types`]. Ids are UUIDv7 text, times are `timestamptz` on PostgreSQL and
//! RFC 3339 text on SQLite, enum-like values are UPPER_SNAKE text. A role is two columns,
//! `builtin_role` and `custom_role_id`, exactly one set, so that a custom role can be a
//! foreign key.

/// People, created on first sight of an OIDC JWT; unique by (issuer, subject).
pub mod user {
    use slipway_db::sea_orm;
    use slipway_db::sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub oidc_issuer: String,
        pub oidc_subject: String,
        pub email: String,
        /// `email` lowercased, what invitations are matched against.
        pub email_key: String,
        pub display_name: String,
        pub create_time: DateTimeUtc,
        pub update_time: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Tenants; `name` unique in the installation.
pub mod organization {
    use slipway_db::sea_orm;
    use slipway_db::sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "organizations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        pub display_name: String,
        pub owner_user_id: String,
        pub create_time: DateTimeUtc,
        pub update_time: DateTimeUtc,
        pub etag: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(has_many = "super::membership::Entity")]
        Membership,
    }

    impl Related<super::membership::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Membership.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

/// A user's place in an organization; unique per (organization, user), at most one `OWNER`
/// per organization.
pub mod membership {
    use slipway_db::sea_orm;
    use slipway_db::sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "memberships")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub organization_id: String,
        pub user_id: String,
        pub builtin_role: Option<String>,
        pub custom_role_id: Option<String>,
        pub create_time: DateTimeUtc,
        pub update_time: DateTimeUtc,
        pub etag: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::user::Entity",
            from = "Column::UserId",
            to = "super::user::Column::Id"
        )]
        User,
        #[sea_orm(
            belongs_to = "super::organization::Entity",
            from = "Column::OrganizationId",
            to = "super::organization::Column::Id"
        )]
        Organization,
    }

    impl Related<super::user::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::User.def()
        }
    }

    impl Related<super::organization::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Organization.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

/// Invitations by email; the token is kept only as its SHA-256 hash.
pub mod invitation {
    use slipway_db::sea_orm;
    use slipway_db::sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "invitations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub organization_id: String,
        pub email: String,
        pub email_key: String,
        pub builtin_role: Option<String>,
        pub custom_role_id: Option<String>,
        pub token_hash: String,
        pub status: String,
        pub inviter_kind: String,
        pub inviter_id: String,
        pub inviter_display_name: String,
        pub expire_time: DateTimeUtc,
        pub member_id: Option<String>,
        pub close_time: Option<DateTimeUtc>,
        pub create_time: DateTimeUtc,
        pub update_time: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Custom roles; `name` unique per organization, grants as one JSON document.
pub mod role {
    use slipway_db::sea_orm;
    use slipway_db::sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "roles")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub organization_id: String,
        pub name: String,
        pub description: String,
        pub grants: Json,
        pub create_time: DateTimeUtc,
        pub update_time: DateTimeUtc,
        pub etag: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// API tokens; `secret_hash` unique, `name` unique per organization.
pub mod api_token {
    use slipway_db::sea_orm;
    use slipway_db::sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub organization_id: String,
        pub name: String,
        pub description: String,
        pub builtin_role: Option<String>,
        pub custom_role_id: Option<String>,
        pub secret_hash: String,
        pub secret_hint: String,
        pub expire_time: Option<DateTimeUtc>,
        pub last_use_time: Option<DateTimeUtc>,
        pub creator_kind: String,
        pub creator_id: String,
        pub creator_display_name: String,
        pub create_time: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The audit log; indexed by (organization, time, id) for newest-first listing.
pub mod audit_event {
    use slipway_db::sea_orm;
    use slipway_db::sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub organization_id: String,
        pub actor_kind: String,
        pub actor_id: String,
        pub actor_display_name: String,
        pub action: String,
        pub method: String,
        pub target_kind: Option<String>,
        pub target_id: Option<String>,
        pub target_project_id: Option<String>,
        pub target_environment_id: Option<String>,
        pub target_environment_mode: Option<String>,
        pub target_cluster_id: Option<String>,
        pub event_time: DateTimeUtc,
        pub origin_ip: String,
        pub origin_user_agent: String,
        pub status_code: String,
        pub error_reason: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
