//! `slipway.catalog.v1.VariableService`: variables and secrets of a project, an
//! environment or a service, and what one service gets once they are resolved.
//!
//! A variable is a row of [`Kind::Variable`] whose `parent_id` is its scope's id, `name`
//! its key and `subtype` its scope (`PROJECT`, `ENVIRONMENT`, `SERVICE`); the
//! `project_id`/`environment_id`/`service_id` columns hold the scope and its ancestry, so
//! a scope's whole subtree is one indexed query and deleting a scope takes its variables
//! along. A secret's value never sits in `spec`: it is sealed into `sealed` with the
//! organization's data key, and only [`EnvironmentVariables::load`] with `reveal` (the
//! internal snapshot) ever opens it.
//!
//! The domain rules (key names, kinds, chains, resolution) live in [`crate::variables`];
//! this file maps them to the API and the store.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use slipway_api::{Violations, page};
use slipway_auth::rbac::{Action, Principal};
use slipway_proto::ApiError;
use slipway_proto::catalog::v1 as pb;
use slipway_proto::catalog::v1::variable_service_server::VariableService;
use slipway_proto::common::v1::EnvironmentMode;
use slipway_proto::events::v1 as ev;
use tonic::{Request, Response, Status};

use super::{
    CatalogMessage as _, Context, MAX_DESCRIPTION, Scope, authorize, caller, precondition,
    request_key, require,
};
use crate::mask::UpdateMask;
use crate::store::{Children, Filter, Kind, NewRow, Row, RowChanges, new_id};
use crate::variables::{
    self as domain, BuiltinContext, ChainError, DefinitionError, PeerService, VariableDef,
};

/// Most variables one scope may hold (the contract's RESOURCE_EXHAUSTED limit). It also
/// bounds what [`Store::list_all`](crate::store::Store::list_all) reads per scope.
pub const MAX_PER_SCOPE: usize = 500;

/// Every path an update may name; which of them fit a variable depends on its kind
/// ([`mutable_for`]).
const MUTABLE: &[&str] = &[
    "value",
    "alias_target_key",
    "file_mount_path",
    "description",
];

/// The gRPC service; mount it behind `AuthenticateLayer`.
#[derive(Clone)]
pub struct Variables {
    ctx: Context,
}

impl Variables {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

/// The update paths that apply to a variable of `kind`.
fn mutable_for(kind: domain::VariableKind) -> &'static [&'static str] {
    match kind {
        domain::VariableKind::Value | domain::VariableKind::Override => &["value", "description"],
        domain::VariableKind::Alias => &["alias_target_key", "description"],
        domain::VariableKind::File => &["value", "file_mount_path", "description"],
    }
}

/// The domain kind of a proto kind; `None` for unspecified or unknown values.
fn domain_kind(kind: i32) -> Option<domain::VariableKind> {
    match pb::VariableKind::try_from(kind).ok()? {
        pb::VariableKind::Unspecified => None,
        pb::VariableKind::Value => Some(domain::VariableKind::Value),
        pb::VariableKind::Alias => Some(domain::VariableKind::Alias),
        pb::VariableKind::Override => Some(domain::VariableKind::Override),
        pb::VariableKind::File => Some(domain::VariableKind::File),
    }
}

fn proto_kind(kind: domain::VariableKind) -> pb::VariableKind {
    match kind {
        domain::VariableKind::Value => pb::VariableKind::Value,
        domain::VariableKind::Alias => pb::VariableKind::Alias,
        domain::VariableKind::Override => pb::VariableKind::Override,
        domain::VariableKind::File => pb::VariableKind::File,
    }
}

fn proto_scope(scope: domain::Scope) -> pb::VariableScope {
    match scope {
        domain::Scope::BuiltIn => pb::VariableScope::BuiltIn,
        domain::Scope::Project => pb::VariableScope::Project,
        domain::Scope::Environment => pb::VariableScope::Environment,
        domain::Scope::Service => pb::VariableScope::Service,
    }
}

/// The `subtype` column of a variable defined at `scope`.
fn subtype_of(scope: domain::Scope) -> &'static str {
    match scope {
        domain::Scope::BuiltIn => "BUILT_IN",
        domain::Scope::Project => "PROJECT",
        domain::Scope::Environment => "ENVIRONMENT",
        domain::Scope::Service => "SERVICE",
    }
}

fn scope_of_subtype(subtype: &str) -> Option<domain::Scope> {
    match subtype {
        "PROJECT" => Some(domain::Scope::Project),
        "ENVIRONMENT" => Some(domain::Scope::Environment),
        "SERVICE" => Some(domain::Scope::Service),
        _ => None,
    }
}

/// A stored variable the API cannot read back: a bug or a corrupt row.
#[derive(Debug, thiserror::Error)]
#[error("corrupt variable {id}: {what}")]
struct CorruptVariable {
    id: String,
    what: &'static str,
}

fn corrupt(row: &Row, what: &'static str) -> ApiError {
    ApiError::internal(CorruptVariable {
        id: row.id.clone(),
        what,
    })
}

/// The scope a request names, before it is looked up.
#[derive(Clone, Copy, Debug)]
enum ScopeRef<'a> {
    Project(&'a str),
    Environment(&'a str),
    Service(&'a str),
}

impl<'a> ScopeRef<'a> {
    fn of_create(scope: Option<&'a pb::create_variable_request::Scope>) -> Option<Self> {
        use pb::create_variable_request::Scope as S;
        Some(match scope? {
            S::ProjectId(id) => Self::Project(id),
            S::EnvironmentId(id) => Self::Environment(id),
            S::ServiceId(id) => Self::Service(id),
        })
    }

    fn of_list(scope: Option<&'a pb::list_variables_request::Scope>) -> Option<Self> {
        use pb::list_variables_request::Scope as S;
        Some(match scope? {
            S::ProjectId(id) => Self::Project(id),
            S::EnvironmentId(id) => Self::Environment(id),
            S::ServiceId(id) => Self::Service(id),
        })
    }

    /// The request field naming the scope, and its id.
    fn field(self) -> (&'static str, &'a str) {
        match self {
            Self::Project(id) => ("project_id", id),
            Self::Environment(id) => ("environment_id", id),
            Self::Service(id) => ("service_id", id),
        }
    }

    /// Validates the scope of a request: exactly one id, present.
    fn validate(scope: Option<Self>, v: &mut Violations) {
        match scope {
            None => v.add(
                "scope",
                "one of project_id, environment_id or service_id is required",
            ),
            Some(scope) => {
                let (field, id) = scope.field();
                v.required(field, id);
            }
        }
    }
}

/// Where a variable is defined, loaded: the scope's id and kind, and what authorizing in
/// it needs (its organization, project, and environment with mode).
#[derive(Clone, Debug)]
struct Place {
    scope: domain::Scope,
    id: String,
    within: Scope,
    service_id: Option<String>,
}

impl Place {
    /// The kind of the scope's row, for NOT_FOUND answers naming it.
    fn kind(&self) -> Kind {
        match self.scope {
            domain::Scope::Environment => Kind::Environment,
            domain::Scope::Service => Kind::Service,
            domain::Scope::BuiltIn | domain::Scope::Project => Kind::Project,
        }
    }

    fn organization_id(&self) -> &str {
        &self.within.organization_id
    }

    fn environment_id(&self) -> Option<&str> {
        self.within.environment.as_ref().map(|(id, _)| id.as_str())
    }

    /// Authorizes `action` in this scope. Project-scoped variables reach every mode, so
    /// the check names no environment and RBAC asks for the grant in every mode (any mode
    /// for a read); the others check the environment's mode.
    fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        kind: Kind,
        id: &str,
    ) -> Result<(), ApiError> {
        authorize(principal, action, &self.within.resource(), kind, id)
    }
}

impl Context {
    /// The scope a request names, NOT_FOUND when it does not exist.
    async fn place(&self, scope: ScopeRef<'_>) -> Result<Place, ApiError> {
        match scope {
            ScopeRef::Project(id) => {
                let row = self.row(Kind::Project, id).await?;
                Ok(Place {
                    scope: domain::Scope::Project,
                    id: row.id.clone(),
                    within: Scope {
                        organization_id: row.organization_id.clone(),
                        project_id: row.id,
                        environment: None,
                    },
                    service_id: None,
                })
            }
            ScopeRef::Environment(id) => {
                let row = self.row(Kind::Environment, id).await?;
                Ok(Place {
                    scope: domain::Scope::Environment,
                    id: row.id.clone(),
                    within: self.environment_scope(&row)?,
                    service_id: None,
                })
            }
            ScopeRef::Service(id) => {
                let row = self.row(Kind::Service, id).await?;
                Ok(Place {
                    scope: domain::Scope::Service,
                    id: row.id.clone(),
                    within: self.scope_of_environment(&row.parent_id).await?,
                    service_id: Some(row.id),
                })
            }
        }
    }

    /// The scope a stored variable is defined in.
    async fn place_of(&self, row: &Row) -> Result<Place, ApiError> {
        let scope = scope_of_subtype(&row.subtype).ok_or_else(|| corrupt(row, "no scope"))?;
        match scope {
            domain::Scope::Project => Ok(Place {
                scope,
                id: row.parent_id.clone(),
                within: Scope {
                    organization_id: row.organization_id.clone(),
                    project_id: row.parent_id.clone(),
                    environment: None,
                },
                service_id: None,
            }),
            domain::Scope::Environment => Ok(Place {
                scope,
                id: row.parent_id.clone(),
                within: self.scope_of_environment(&row.parent_id).await?,
                service_id: None,
            }),
            domain::Scope::Service | domain::Scope::BuiltIn => {
                let environment = row
                    .environment_id
                    .as_deref()
                    .ok_or_else(|| corrupt(row, "a service variable without environment"))?;
                Ok(Place {
                    scope,
                    id: row.parent_id.clone(),
                    within: self.scope_of_environment(environment).await?,
                    service_id: Some(row.parent_id.clone()),
                })
            }
        }
    }
}

/// The Variable message of a stored row: a secret's value left empty (by
/// `CatalogMessage::fill`), its scope from the row's columns.
fn message_of(row: &Row) -> Result<pb::Variable, ApiError> {
    let mut variable = pb::Variable::from_row(row)?;
    let scope = scope_of_subtype(&row.subtype).ok_or_else(|| corrupt(row, "no scope"))?;
    variable.scope = Some(match scope {
        domain::Scope::Environment => pb::variable::Scope::EnvironmentId(row.parent_id.clone()),
        domain::Scope::Service => pb::variable::Scope::ServiceId(row.parent_id.clone()),
        domain::Scope::BuiltIn | domain::Scope::Project => {
            pb::variable::Scope::ProjectId(row.parent_id.clone())
        }
    });
    Ok(variable)
}

/// The spec of `variable`: output-only fields, the scope and (for a secret) the value
/// cleared.
fn spec_of(variable: &pb::Variable) -> Vec<u8> {
    let mut stored = variable.clone();
    stored.scope = None;
    stored.to_spec()
}

/// The domain view of a variable message defined at `scope`. `None` when its kind is
/// unspecified (refused on write).
fn def_of(variable: &pb::Variable, scope: domain::Scope) -> Option<VariableDef> {
    let kind = domain_kind(variable.kind)?;
    Some(VariableDef {
        id: variable.id.clone(),
        scope,
        key: variable.key.clone(),
        kind,
        value: variable.value.clone(),
        is_secret: variable.is_secret,
        file_path: (!variable.file_mount_path.is_empty()).then(|| variable.file_mount_path.clone()),
        alias_target: (!variable.alias_target_key.is_empty())
            .then(|| variable.alias_target_key.clone()),
    })
}

/// The domain view of a stored variable, its secret value left empty.
fn def_of_row(row: &Row) -> Result<VariableDef, ApiError> {
    let scope = scope_of_subtype(&row.subtype).ok_or_else(|| corrupt(row, "no scope"))?;
    let variable = pb::Variable::from_row(row)?;
    def_of(&variable, scope).ok_or_else(|| corrupt(row, "no kind"))
}

/// A definition refused on its own, as the field violation of the request field at fault.
fn definition_violation(error: &DefinitionError, prefix: &str, v: &mut Violations) {
    let field = match error {
        DefinitionError::Key(_) | DefinitionError::BuiltInScope => "key",
        DefinitionError::FilePath(_) | DefinitionError::MissingFilePath => "file_mount_path",
        DefinitionError::MissingAliasTarget
        | DefinitionError::InvalidAliasTarget(_)
        | DefinitionError::SelfAlias => "alias_target_key",
        DefinitionError::UnexpectedField { field, .. } => field,
        DefinitionError::SecretAlias => "is_secret",
        DefinitionError::ValueTooLong { .. } => "value",
    };
    v.add(format!("{prefix}{field}"), error.to_string());
}

/// A variable refused given the others along its chain: ALREADY_EXISTS for a key
/// defined twice, FAILED_PRECONDITION (naming the field at fault) for the rest, as the
/// VariableService contract says.
fn chain_error(error: &ChainError) -> ApiError {
    let (reason, subject) = match error {
        ChainError::AlreadyInScope { key } | ChainError::DefinedElsewhere { key, .. } => {
            return ApiError::already_exists("variable", key.clone());
        }
        ChainError::OverrideWithoutDefinition { .. } => ("OVERRIDE_WITHOUT_DEFINITION", "key"),
        ChainError::OverrideOfAlias { .. } => ("OVERRIDE_OF_ALIAS", "key"),
        ChainError::OverrideMustBeSecret { .. } => ("OVERRIDE_MUST_BE_SECRET", "is_secret"),
        ChainError::AliasTargetNotFound { .. } => ("ALIAS_TARGET_NOT_FOUND", "alias_target_key"),
        ChainError::AliasOfAlias { .. } => ("ALIAS_OF_ALIAS", "alias_target_key"),
    };
    precondition(reason, &format!("variable.{subject}"), error.to_string())
}

/// The built-in keys that can exist at or below a scope, for alias checks: the identity
/// keys, and the peer keys of every service in the scope's environments. Values do not
/// matter to [`domain::check_in_chain`], so they are left empty.
fn builtin_keys(services: &[Row]) -> Result<Vec<VariableDef>, ApiError> {
    let mut peers = Vec::with_capacity(services.len());
    for row in services {
        peers.push(peer_of(row, &pb::Service::from_row(row)?));
    }
    Ok(domain::builtin_variables(&BuiltinContext {
        peers,
        ..BuiltinContext::default()
    }))
}

/// How the environment's other services see `service`: its host name and the port they
/// reach it on (the first port's client-facing port; a container database without ports
/// listens on its engine's default).
fn peer_of(row: &Row, service: &pb::Service) -> PeerService {
    use pb::service::Settings;
    let runtime = match &service.settings {
        Some(Settings::Application(s)) => s.runtime.as_ref(),
        Some(Settings::Container(s)) => s.runtime.as_ref(),
        Some(Settings::Database(s)) => s.runtime.as_ref(),
        _ => None,
    };
    let port = runtime
        .and_then(|runtime| runtime.ports.first())
        .map(|port| {
            if port.external_port == 0 {
                port.internal_port
            } else {
                port.external_port
            }
        })
        .or_else(|| match &service.settings {
            Some(Settings::Database(db)) if db.mode == i32::from(pb::DatabaseMode::Container) => {
                default_port(db.engine)
            }
            _ => None,
        })
        .and_then(|port| u16::try_from(port).ok());
    PeerService {
        name: row.name.clone(),
        internal_port: port,
        // The catalog does not hold database credentials yet, so no URL is known.
        database_url: None,
    }
}

fn default_port(engine: i32) -> Option<u32> {
    match pb::DatabaseEngine::try_from(engine).ok()? {
        pb::DatabaseEngine::Postgresql => Some(5432),
        pb::DatabaseEngine::Mysql => Some(3306),
        pb::DatabaseEngine::Redis => Some(6379),
        pb::DatabaseEngine::Mongodb => Some(27017),
        pb::DatabaseEngine::Unspecified => None,
    }
}

/// The mode as built-ins spell it: `PRODUCTION`, `STAGING`, `DEVELOPMENT`, `PREVIEW`.
fn mode_name(mode: i32) -> String {
    EnvironmentMode::try_from(mode)
        .map(|mode| {
            mode.as_str_name()
                .trim_start_matches("ENVIRONMENT_MODE_")
                .to_owned()
        })
        .unwrap_or_default()
}

/// The variables of one environment's scope chains and the built-ins of its services,
/// loaded once so every service of a snapshot resolves without more queries.
pub(crate) struct EnvironmentVariables {
    base: BuiltinContext,
    project: Vec<VariableDef>,
    environment: Vec<VariableDef>,
    services: HashMap<String, Vec<VariableDef>>,
    /// Variable id → id of the scope it is defined on, for [`pb::VariableSource`].
    scope_ids: HashMap<String, String>,
    reveal: bool,
}

impl EnvironmentVariables {
    /// Loads the variables of `environment` (of `project`) and builds the built-ins from
    /// `services`, its services. With `reveal`, secret values are opened; without, they
    /// stay empty and are never read.
    pub(crate) async fn load(
        ctx: &Context,
        project: &Row,
        environment: &Row,
        services: &[Row],
        reveal: bool,
    ) -> Result<Self, ApiError> {
        let org = environment.organization_id.clone();
        let project_rows = ctx
            .store
            .list_all(
                Kind::Variable,
                &Filter {
                    organization_id: org.clone(),
                    parent_id: Some(project.id.clone()),
                    ..Filter::default()
                },
            )
            .await?;
        let below = ctx
            .store
            .list_all(
                Kind::Variable,
                &Filter {
                    organization_id: org.clone(),
                    environment_id: Some(environment.id.clone()),
                    ..Filter::default()
                },
            )
            .await?;
        let env_message = pb::Environment::from_row(environment)?;
        let mut peers = Vec::with_capacity(services.len());
        for row in services {
            peers.push(peer_of(row, &pb::Service::from_row(row)?));
        }
        let mut loaded = Self {
            base: BuiltinContext {
                organization_id: org,
                project_id: project.id.clone(),
                project_name: project.name.clone(),
                environment_id: environment.id.clone(),
                environment_name: environment.name.clone(),
                environment_mode: mode_name(env_message.mode),
                service_id: String::new(),
                service_name: String::new(),
                peers,
            },
            project: Vec::new(),
            environment: Vec::new(),
            services: HashMap::new(),
            scope_ids: HashMap::new(),
            reveal,
        };
        for row in project_rows.iter().chain(&below) {
            let def = loaded.def(ctx, row).await?;
            loaded
                .scope_ids
                .insert(row.id.clone(), row.parent_id.clone());
            match def.scope {
                domain::Scope::Project => loaded.project.push(def),
                domain::Scope::Environment => loaded.environment.push(def),
                domain::Scope::Service => loaded
                    .services
                    .entry(row.parent_id.clone())
                    .or_default()
                    .push(def),
                domain::Scope::BuiltIn => return Err(corrupt(row, "built-in scope")),
            }
        }
        Ok(loaded)
    }

    async fn def(&self, ctx: &Context, row: &Row) -> Result<VariableDef, ApiError> {
        let mut def = def_of_row(row)?;
        if def.is_secret && self.reveal {
            let sealed = row
                .sealed
                .as_deref()
                .ok_or_else(|| corrupt(row, "a secret without its sealed value"))?;
            let plain = ctx
                .keyring
                .open(&row.organization_id, Kind::Variable, sealed)
                .await?;
            def.value =
                String::from_utf8(plain).map_err(|_| corrupt(row, "a secret not in UTF-8"))?;
        }
        Ok(def)
    }

    /// The effective variables of `service` (a row of this environment), ordered by key.
    /// Secret values are filled only when loaded with `reveal`. An unresolvable set (an
    /// alias whose target vanished, two files on one path) is FAILED_PRECONDITION naming
    /// it.
    pub(crate) fn effective(&self, service: &Row) -> Result<Vec<pb::EffectiveVariable>, ApiError> {
        let mut defs = domain::builtin_variables(&BuiltinContext {
            service_id: service.id.clone(),
            service_name: service.name.clone(),
            ..self.base.clone()
        });
        defs.extend(self.project.iter().cloned());
        defs.extend(self.environment.iter().cloned());
        if let Some(own) = self.services.get(&service.id) {
            defs.extend(own.iter().cloned());
        }
        let resolved = domain::resolve(&defs).map_err(|error| {
            precondition(
                "VARIABLES_UNRESOLVABLE",
                &format!("service/{}", service.name),
                format!(
                    "the variables of service {} cannot be resolved: {error}",
                    service.name
                ),
            )
        })?;
        Ok(resolved
            .into_iter()
            .map(|var| {
                let builtin = var.source.scope == domain::Scope::BuiltIn;
                let value = if var.is_secret && !self.reveal {
                    String::new()
                } else {
                    var.value
                };
                pb::EffectiveVariable {
                    key: var.key,
                    value,
                    is_secret: var.is_secret,
                    file_mount_path: var.file_path.unwrap_or_default(),
                    source: Some(pb::VariableSource {
                        scope: proto_scope(var.source.scope).into(),
                        scope_id: self
                            .scope_ids
                            .get(&var.source.variable_id)
                            .cloned()
                            .unwrap_or_default(),
                        variable_id: var.source.variable_id,
                        kind: if builtin {
                            pb::VariableKind::Unspecified.into()
                        } else {
                            proto_kind(var.source.kind).into()
                        },
                    }),
                    alias_target_key: var.source.via_alias_of.unwrap_or_default(),
                }
            })
            .collect())
    }
}

/// Where a List page continues: after this key. Keys are unique in a scope, so keyset
/// pagination by key is exact even while variables are added.
#[derive(Serialize, Deserialize)]
struct KeyCursor {
    key: String,
}

impl Variables {
    /// Every variable visible from or to `place`, the built-ins that can exist there
    /// included: what [`domain::check_in_chain`] checks a write against. For a service,
    /// its chain (project, environment, service); for an environment, also its services'
    /// variables; for a project, every variable of it.
    async fn chain(&self, place: &Place) -> Result<Vec<VariableDef>, ApiError> {
        let org = place.organization_id().to_owned();
        let project_id = place.within.project_id.clone();
        let rows = self
            .ctx
            .store
            .list_all(
                Kind::Variable,
                &Filter {
                    organization_id: org.clone(),
                    project_id: Some(project_id.clone()),
                    ..Filter::default()
                },
            )
            .await?;
        let environment = place.environment_id();
        let mut chain = Vec::with_capacity(rows.len());
        for row in &rows {
            let def = def_of_row(row)?;
            let visible = match (place.scope, def.scope) {
                (domain::Scope::Project, _) | (_, domain::Scope::Project) => true,
                (domain::Scope::Environment, _) => row.environment_id.as_deref() == environment,
                (domain::Scope::Service, domain::Scope::Environment) => {
                    Some(row.parent_id.as_str()) == environment
                }
                (domain::Scope::Service, domain::Scope::Service) => {
                    Some(&row.parent_id) == place.service_id.as_ref()
                }
                _ => false,
            };
            if visible {
                chain.push(def);
            }
        }
        // Services name their environment in `parent_id`, their project in `project_id`.
        let services = self
            .ctx
            .store
            .list_all(
                Kind::Service,
                &Filter {
                    organization_id: org,
                    parent_id: environment.map(str::to_owned),
                    project_id: Some(project_id),
                    ..Filter::default()
                },
            )
            .await?;
        chain.extend(builtin_keys(&services)?);
        Ok(chain)
    }

    /// Checks `def` (to be written at `place`) against its chain: the chain rules, and
    /// that a file's mount path is not another file's along the same chain.
    async fn check_chain(&self, place: &Place, def: &VariableDef) -> Result<(), ApiError> {
        let chain = self.chain(place).await?;
        domain::check_in_chain(&chain, def).map_err(|error| chain_error(&error))?;
        if let Some(path) = def.file_path.as_deref()
            && let Some(other) = chain.iter().find(|other| {
                other.key != def.key
                    && (def.id.is_empty() || other.id != def.id)
                    && other.file_path.as_deref() == Some(path)
            })
        {
            return Err(ApiError::invalid_field(
                "variable.file_mount_path",
                format!("is already the mount path of {}", other.key),
            ));
        }
        Ok(())
    }

    /// The sealed form of a secret value.
    async fn seal(&self, organization_id: &str, value: &str) -> Result<Vec<u8>, ApiError> {
        self.ctx
            .keyring
            .seal(organization_id, Kind::Variable, value.as_bytes())
            .await
    }

    async fn create(
        &self,
        principal: &Principal,
        request: pb::CreateVariableRequest,
    ) -> Result<pb::Variable, Status> {
        let scope = ScopeRef::of_create(request.scope.as_ref());
        let mut variable = request.variable.unwrap_or_default();
        let mut v = Violations::new();
        ScopeRef::validate(scope, &mut v);
        v.request_id(&request.request_id);
        v.max_chars(
            "variable.description",
            &variable.description,
            MAX_DESCRIPTION,
        );
        variable.id.clear();
        let scope_kind = match scope {
            Some(ScopeRef::Environment(_)) => domain::Scope::Environment,
            Some(ScopeRef::Service(_)) => domain::Scope::Service,
            _ => domain::Scope::Project,
        };
        let def = def_of(&variable, scope_kind);
        match &def {
            None => v.add("variable.kind", "is required"),
            Some(def) => {
                if let Err(error) = def.validate() {
                    definition_violation(&error, "variable.", &mut v);
                }
            }
        }
        v.finish()?;
        let (Some(scope), Some(def)) = (scope, def) else {
            return Err(ApiError::invalid_field("scope", "is required").into());
        };
        let place = self.ctx.place(scope).await?;
        let (_, scope_id) = scope.field();
        place.authorize(
            principal,
            Action::CatalogVariablesWrite,
            place.kind(),
            scope_id,
        )?;
        let org = place.organization_id().to_owned();
        let key = request_key(&org, "CreateVariable", &request.request_id);
        let replaying = match self.check_chain(&place, &def).await {
            Ok(()) => false,
            // A repeated request finds its own first result in the scope: the insert
            // below then replays it (or, for a new request id, fails on the key's
            // uniqueness and writes nothing).
            Err(ApiError::AlreadyExists { .. }) if key.is_some() => true,
            Err(error) => return Err(error.into()),
        };
        if !replaying {
            let in_scope = self
                .ctx
                .store
                .list_all(
                    Kind::Variable,
                    &Filter {
                        organization_id: org.clone(),
                        parent_id: Some(place.id.clone()),
                        ..Filter::default()
                    },
                )
                .await
                .map_err(ApiError::from)?;
            if in_scope.len() >= MAX_PER_SCOPE {
                return Err(Status::resource_exhausted(format!(
                    "this {} already holds {MAX_PER_SCOPE} variables, the most a scope may hold",
                    place.kind()
                )));
            }
        }
        let sealed = if variable.is_secret {
            Some(self.seal(&org, &variable.value).await?)
        } else {
            None
        };
        let row = NewRow {
            id: new_id(),
            organization_id: org.clone(),
            parent_id: place.id.clone(),
            name: variable.key.clone(),
            subtype: subtype_of(place.scope).to_owned(),
            project_id: Some(place.within.project_id.clone()),
            environment_id: place.environment_id().map(str::to_owned),
            service_id: place.service_id.clone(),
            spec: spec_of(&variable),
            sealed,
            ..NewRow::default()
        };
        let (row, created) = self
            .ctx
            .store
            .insert(Kind::Variable, row, key)
            .await
            .map_err(ApiError::from)?;
        if row.organization_id != org {
            // A request id is per organization, so this cannot happen; refuse to show
            // another organization's row should it ever.
            return Err(ApiError::not_found("variable", "").into());
        }
        let variable = message_of(&row)?;
        if created {
            self.ctx
                .publish(
                    principal,
                    &org,
                    "variable",
                    "created",
                    ev::event::Payload::VariableCreated(ev::VariableCreated {
                        variable_id: row.id.clone(),
                        key: row.name.clone(),
                        project_id: row.project_id.clone().unwrap_or_default(),
                        environment_id: row.environment_id.clone().unwrap_or_default(),
                        service_id: row.service_id.clone().unwrap_or_default(),
                        is_secret: variable.is_secret,
                    }),
                )
                .await;
        }
        Ok(variable)
    }

    /// A variable and its scope, after checking `action` on it (NOT_FOUND naming the
    /// variable otherwise).
    async fn authorized(
        &self,
        principal: &Principal,
        action: Action,
        id: &str,
    ) -> Result<(Row, Place), ApiError> {
        let row = self.ctx.row(Kind::Variable, id).await?;
        let place = self.ctx.place_of(&row).await?;
        place.authorize(principal, action, Kind::Variable, id)?;
        Ok((row, place))
    }

    async fn get(&self, principal: &Principal, id: &str) -> Result<pb::Variable, ApiError> {
        require("id", id)?;
        let (row, _) = self
            .authorized(principal, Action::CatalogVariablesRead, id)
            .await?;
        message_of(&row)
    }

    async fn list(
        &self,
        principal: &Principal,
        request: pb::ListVariablesRequest,
    ) -> Result<pb::ListVariablesResponse, ApiError> {
        let scope = ScopeRef::of_list(request.scope.as_ref());
        let mut v = Violations::new();
        ScopeRef::validate(scope, &mut v);
        let size = v.page_size(request.page_size);
        let kind_filter = match request.kind {
            0 => None,
            kind => {
                let kind = domain_kind(kind);
                if kind.is_none() {
                    v.add("kind", "is not a variable kind");
                }
                kind
            }
        };
        v.max_chars("key_prefix", &request.key_prefix, domain::MAX_KEY_LEN);
        let (field, scope_id) = scope.map(ScopeRef::field).unwrap_or_default();
        let query = format!(
            "variables/{field}/{scope_id}/{}/{}",
            request.kind, request.key_prefix
        );
        let after = match page::decode::<KeyCursor>(&request.page_token, &query) {
            Ok(after) => after,
            Err(_) => {
                v.add(
                    "page_token",
                    "is not a page token of this listing with these fields",
                );
                None
            }
        };
        v.finish()?;
        let Some(scope) = scope else {
            return Err(ApiError::invalid_field("scope", "is required"));
        };
        let place = self.ctx.place(scope).await?;
        place.authorize(
            principal,
            Action::CatalogVariablesRead,
            place.kind(),
            scope_id,
        )?;
        // A scope holds at most MAX_PER_SCOPE variables, so the page is cut from the whole
        // scope ordered by key, as the contract promises.
        let mut rows = self
            .ctx
            .store
            .list_all(
                Kind::Variable,
                &Filter {
                    organization_id: place.organization_id().to_owned(),
                    parent_id: Some(place.id.clone()),
                    ..Filter::default()
                },
            )
            .await?;
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        let mut variables = Vec::new();
        let mut more = false;
        let limit = usize::try_from(size).unwrap_or(usize::MAX);
        for row in &rows {
            if after.as_ref().is_some_and(|after| row.name <= after.key)
                || !row.name.starts_with(&request.key_prefix)
            {
                continue;
            }
            let variable = message_of(row)?;
            if kind_filter.is_some_and(|kind| i32::from(proto_kind(kind)) != variable.kind) {
                continue;
            }
            if variables.len() == limit {
                more = true;
                break;
            }
            variables.push(variable);
        }
        let next = more
            .then(|| {
                variables.last().map(|last| KeyCursor {
                    key: last.key.clone(),
                })
            })
            .flatten();
        Ok(pb::ListVariablesResponse {
            variables,
            next_page_token: page::encode(next, &query),
        })
    }

    async fn update(
        &self,
        principal: &Principal,
        request: pb::UpdateVariableRequest,
    ) -> Result<pb::Variable, ApiError> {
        let update = request.variable.unwrap_or_default();
        let mut v = Violations::new();
        v.required("variable.id", &update.id);
        let mask = UpdateMask::parse(request.update_mask.as_ref(), MUTABLE, &mut v);
        if mask.has("description") {
            v.max_chars("variable.description", &update.description, MAX_DESCRIPTION);
        }
        v.finish()?;
        let (row, place) = self
            .authorized(principal, Action::CatalogVariablesWrite, &update.id)
            .await?;
        let current = def_of_row(&row)?;
        // An explicit path that the variable's kind does not use is refused; an empty mask
        // (every mutable field) means the paths of its kind.
        let mut v = Violations::new();
        let explicit = request
            .update_mask
            .as_ref()
            .is_some_and(|mask| !mask.paths.is_empty());
        let mask = if explicit {
            UpdateMask::parse(
                request.update_mask.as_ref(),
                mutable_for(current.kind),
                &mut v,
            )
        } else {
            UpdateMask::parse(None, mutable_for(current.kind), &mut v)
        };
        v.finish()?;
        let mut variable = pb::Variable::from_row(&row)?;
        if mask.has("value") {
            variable.value = update.value.clone();
        }
        if mask.has("alias_target_key") {
            variable.alias_target_key = update.alias_target_key.clone();
        }
        if mask.has("file_mount_path") {
            variable.file_mount_path = update.file_mount_path.clone();
        }
        if mask.has("description") {
            variable.description = update.description.clone();
        }
        let def = def_of(&variable, place.scope).ok_or_else(|| corrupt(&row, "no kind"))?;
        let mut v = Violations::new();
        if let Err(error) = def.validate() {
            definition_violation(&error, "variable.", &mut v);
        }
        v.finish()?;
        if mask.has("alias_target_key") || mask.has("file_mount_path") {
            self.check_chain(&place, &def).await?;
        }
        let sealed = if variable.is_secret && mask.has("value") {
            Some(Some(
                self.seal(&row.organization_id, &variable.value).await?,
            ))
        } else {
            None
        };
        let changes = RowChanges {
            spec: Some(spec_of(&variable)),
            sealed,
            ..RowChanges::default()
        };
        let etag = (!update.etag.is_empty()).then_some(update.etag.as_str());
        let row = self
            .ctx
            .store
            .update(Kind::Variable, &row.id, etag, changes)
            .await?;
        let variable = message_of(&row)?;
        self.ctx
            .publish(
                principal,
                &row.organization_id,
                "variable",
                "updated",
                ev::event::Payload::VariableUpdated(ev::VariableUpdated {
                    variable_id: row.id.clone(),
                    key: row.name.clone(),
                    project_id: row.project_id.clone().unwrap_or_default(),
                    environment_id: row.environment_id.clone().unwrap_or_default(),
                    service_id: row.service_id.clone().unwrap_or_default(),
                    is_secret: variable.is_secret,
                    update_mask: Some(mask.to_proto()),
                }),
            )
            .await;
        Ok(variable)
    }

    /// The OVERRIDE and ALIAS variables that rely on the definition `row` (at `place`):
    /// those of its key (overrides) or copying it (aliases) in its scope or below. A key
    /// is defined once along a chain, so every such variable relies on this one.
    async fn dependants(&self, row: &Row, place: &Place) -> Result<Vec<Row>, ApiError> {
        let filter = Filter {
            organization_id: row.organization_id.clone(),
            project_id: Some(place.within.project_id.clone()),
            environment_id: place.environment_id().map(str::to_owned),
            service_id: place.service_id.clone(),
            ..Filter::default()
        };
        let rows = self.ctx.store.list_all(Kind::Variable, &filter).await?;
        let mut dependants = Vec::new();
        for other in rows {
            if other.id == row.id {
                continue;
            }
            let def = def_of_row(&other)?;
            let relies = match def.kind {
                domain::VariableKind::Override => def.key == row.name,
                domain::VariableKind::Alias => def.alias_target.as_deref() == Some(&row.name),
                _ => false,
            };
            if relies {
                dependants.push(other);
            }
        }
        Ok(dependants)
    }

    async fn delete(
        &self,
        principal: &Principal,
        request: pb::DeleteVariableRequest,
    ) -> Result<(), ApiError> {
        require("id", &request.id)?;
        let (row, place) = self
            .authorized(principal, Action::CatalogVariablesWrite, &request.id)
            .await?;
        if !request.etag.is_empty() && request.etag != row.etag {
            return Err(ApiError::stale_etag("variable"));
        }
        let def = def_of_row(&row)?;
        let dependants = if def.is_definition() {
            self.dependants(&row, &place).await?
        } else {
            Vec::new()
        };
        if !dependants.is_empty() && !request.force {
            let keys: Vec<&str> = dependants.iter().map(|d| d.name.as_str()).collect();
            return Err(precondition(
                "HAS_DEPENDANTS",
                "variable",
                format!(
                    "variables rely on {}: {}; delete them first or pass force",
                    row.name,
                    keys.join(", ")
                ),
            ));
        }
        // Authorize every dependant before deleting anything, so a refusal deletes
        // nothing.
        let mut dependant_places = Vec::with_capacity(dependants.len());
        for dependant in &dependants {
            let place = self.ctx.place_of(dependant).await?;
            place.authorize(
                principal,
                Action::CatalogVariablesWrite,
                Kind::Variable,
                &dependant.id,
            )?;
            dependant_places.push(place);
        }
        let etag = (!request.etag.is_empty()).then_some(request.etag.as_str());
        self.ctx
            .store
            .delete(Kind::Variable, &row.id, etag, Children::Refuse)
            .await?;
        self.publish_deleted(principal, &row).await;
        for dependant in &dependants {
            match self
                .ctx
                .store
                .delete(Kind::Variable, &dependant.id, None, Children::Refuse)
                .await
            {
                Ok(_) => self.publish_deleted(principal, dependant).await,
                // Deleted concurrently: what force asked for already happened.
                Err(crate::store::StoreError::NotFound(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    async fn publish_deleted(&self, principal: &Principal, row: &Row) {
        self.ctx
            .publish(
                principal,
                &row.organization_id,
                "variable",
                "deleted",
                ev::event::Payload::VariableDeleted(ev::VariableDeleted {
                    variable_id: row.id.clone(),
                    key: row.name.clone(),
                    project_id: row.project_id.clone().unwrap_or_default(),
                    environment_id: row.environment_id.clone().unwrap_or_default(),
                    service_id: row.service_id.clone().unwrap_or_default(),
                }),
            )
            .await;
    }

    async fn list_effective(
        &self,
        principal: &Principal,
        service_id: &str,
    ) -> Result<Vec<pb::EffectiveVariable>, ApiError> {
        require("service_id", service_id)?;
        let service = self.ctx.row(Kind::Service, service_id).await?;
        let environment = self.ctx.row(Kind::Environment, &service.parent_id).await?;
        let scope = self.ctx.environment_scope(&environment)?;
        authorize(
            principal,
            Action::CatalogVariablesRead,
            &scope.resource(),
            Kind::Service,
            service_id,
        )?;
        let project = self.ctx.row(Kind::Project, &environment.parent_id).await?;
        let services = self
            .ctx
            .store
            .list_all(
                Kind::Service,
                &Filter {
                    organization_id: environment.organization_id.clone(),
                    parent_id: Some(environment.id.clone()),
                    ..Filter::default()
                },
            )
            .await?;
        let loaded =
            EnvironmentVariables::load(&self.ctx, &project, &environment, &services, false).await?;
        loaded.effective(&service)
    }
}

#[tonic::async_trait]
impl VariableService for Variables {
    async fn create_variable(
        &self,
        request: Request<pb::CreateVariableRequest>,
    ) -> Result<Response<pb::CreateVariableResponse>, Status> {
        let principal = caller(&request)?;
        let variable = self.create(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::CreateVariableResponse {
            variable: Some(variable),
        }))
    }

    async fn get_variable(
        &self,
        request: Request<pb::GetVariableRequest>,
    ) -> Result<Response<pb::GetVariableResponse>, Status> {
        let principal = caller(&request)?;
        let variable = self.get(&principal, &request.get_ref().id).await?;
        Ok(Response::new(pb::GetVariableResponse {
            variable: Some(variable),
        }))
    }

    async fn list_variables(
        &self,
        request: Request<pb::ListVariablesRequest>,
    ) -> Result<Response<pb::ListVariablesResponse>, Status> {
        let principal = caller(&request)?;
        Ok(Response::new(
            self.list(&principal, request.into_inner()).await?,
        ))
    }

    async fn update_variable(
        &self,
        request: Request<pb::UpdateVariableRequest>,
    ) -> Result<Response<pb::UpdateVariableResponse>, Status> {
        let principal = caller(&request)?;
        let variable = self.update(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::UpdateVariableResponse {
            variable: Some(variable),
        }))
    }

    async fn delete_variable(
        &self,
        request: Request<pb::DeleteVariableRequest>,
    ) -> Result<Response<pb::DeleteVariableResponse>, Status> {
        let principal = caller(&request)?;
        self.delete(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::DeleteVariableResponse {}))
    }

    async fn list_effective_variables(
        &self,
        request: Request<pb::ListEffectiveVariablesRequest>,
    ) -> Result<Response<pb::ListEffectiveVariablesResponse>, Status> {
        let principal = caller(&request)?;
        let variables = self
            .list_effective(&principal, &request.get_ref().service_id)
            .await?;
        Ok(Response::new(pb::ListEffectiveVariablesResponse {
            variables,
        }))
    }
}
