//! The built-in `SLIPWAY_*` variables: what every service gets without anyone writing
//! it, so applications find their own identity and their neighbours (a database's host,
//! port and connection URL) and people can alias those under the names their code uses.

use std::collections::BTreeMap;

use super::VariableDef;

/// One service of the environment, as its neighbours need to know it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerService {
    /// Its name: a DNS label, also its host name inside the environment.
    pub name: String,
    /// The port other services reach it on, when it listens on one.
    pub internal_port: Option<u16>,
    /// For a database, its connection URL (with credentials, hence secret), when known.
    pub database_url: Option<String>,
}

/// What the built-ins of one service are made from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuiltinContext {
    /// The organization owning the project.
    pub organization_id: String,
    /// The project.
    pub project_id: String,
    /// The project's name.
    pub project_name: String,
    /// The environment.
    pub environment_id: String,
    /// The environment's name.
    pub environment_name: String,
    /// The environment's mode, as the API spells it without prefix (`PRODUCTION`,
    /// `STAGING`, `DEVELOPMENT`, `PREVIEW`).
    pub environment_mode: String,
    /// The service the variables are for.
    pub service_id: String,
    /// Its name.
    pub service_name: String,
    /// Every service of the environment, this one included.
    pub peers: Vec<PeerService>,
}

/// The part of a built-in key naming a service: upper-cased, with `-` (and anything
/// else not allowed in a key) turned into `_`. Service names are DNS labels, so two
/// services never map to the same part.
pub fn env_name_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The built-in variables of one service, sorted by key: its identity
/// (`SLIPWAY_ORGANIZATION_ID`, `SLIPWAY_PROJECT_ID`, `SLIPWAY_PROJECT_NAME`,
/// `SLIPWAY_ENVIRONMENT_ID`, `SLIPWAY_ENVIRONMENT_NAME`, `SLIPWAY_ENVIRONMENT_MODE`,
/// `SLIPWAY_SERVICE_ID`, `SLIPWAY_SERVICE_NAME`) and, for each service of the
/// environment, `SLIPWAY_<NAME>_HOST` and `SLIPWAY_<NAME>_PORT` when it has an internal
/// port and `SLIPWAY_<NAME>_URL` (secret) when it is a database with a known URL.
///
/// Peer keys end in `_HOST`, `_PORT` or `_URL` and identity keys in `_ID`, `_NAME` or
/// `_MODE`, so a service named `project` cannot shadow `SLIPWAY_PROJECT_ID`.
pub fn builtin_variables(ctx: &BuiltinContext) -> Vec<VariableDef> {
    let mut vars: BTreeMap<String, VariableDef> = BTreeMap::new();
    let mut put = |key: String, value: &str, secret: bool| {
        let def = VariableDef::builtin(&key, value);
        vars.insert(key, if secret { def.secret() } else { def });
    };
    let identity = [
        ("SLIPWAY_ORGANIZATION_ID", &ctx.organization_id),
        ("SLIPWAY_PROJECT_ID", &ctx.project_id),
        ("SLIPWAY_PROJECT_NAME", &ctx.project_name),
        ("SLIPWAY_ENVIRONMENT_ID", &ctx.environment_id),
        ("SLIPWAY_ENVIRONMENT_NAME", &ctx.environment_name),
        ("SLIPWAY_ENVIRONMENT_MODE", &ctx.environment_mode),
        ("SLIPWAY_SERVICE_ID", &ctx.service_id),
        ("SLIPWAY_SERVICE_NAME", &ctx.service_name),
    ];
    for (key, value) in identity {
        put(key.to_owned(), value, false);
    }
    for peer in &ctx.peers {
        let part = env_name_part(&peer.name);
        if let Some(port) = peer.internal_port {
            put(format!("SLIPWAY_{part}_HOST"), &peer.name, false);
            put(format!("SLIPWAY_{part}_PORT"), &port.to_string(), false);
        }
        if let Some(url) = &peer.database_url {
            put(format!("SLIPWAY_{part}_URL"), url, true);
        }
    }
    vars.into_values().collect()
}
