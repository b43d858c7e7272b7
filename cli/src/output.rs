//! Output for people (aligned tables, `key: value` details) and for scripts (`-o json`:
//! the protobuf messages in the proto3 JSON mapping, with proto field names and every field
//! present, through prost-reflect and the descriptor set `slipway-proto` embeds).

use std::sync::OnceLock;

use anyhow::Context as _;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts: one object, an array for lists, one object per line for logs.
    Json,
}

/// A generated message that can be printed as JSON: its fully qualified proto name.
pub trait Named: prost::Message {
    const NAME: &'static str;
}

macro_rules! named {
    ($($ty:path => $name:literal),* $(,)?) => {
        $(impl Named for $ty { const NAME: &'static str = $name; })*
    };
}

named!(
    slipway_proto::identity::v1::Organization => "slipway.identity.v1.Organization",
    slipway_proto::identity::v1::Member => "slipway.identity.v1.Member",
    slipway_proto::identity::v1::ApiToken => "slipway.identity.v1.ApiToken",
    slipway_proto::identity::v1::CreateInvitationResponse => "slipway.identity.v1.CreateInvitationResponse",
    slipway_proto::identity::v1::CreateApiTokenResponse => "slipway.identity.v1.CreateApiTokenResponse",
    slipway_proto::identity::v1::Principal => "slipway.identity.v1.Principal",
    slipway_proto::catalog::v1::Project => "slipway.catalog.v1.Project",
    slipway_proto::catalog::v1::Environment => "slipway.catalog.v1.Environment",
    slipway_proto::catalog::v1::Service => "slipway.catalog.v1.Service",
    slipway_proto::catalog::v1::Cluster => "slipway.catalog.v1.Cluster",
    slipway_proto::catalog::v1::RegisterClusterResponse => "slipway.catalog.v1.RegisterClusterResponse",
    slipway_proto::catalog::v1::GetClusterInstallManifestResponse => "slipway.catalog.v1.GetClusterInstallManifestResponse",
    slipway_proto::catalog::v1::Variable => "slipway.catalog.v1.Variable",
    slipway_proto::catalog::v1::EffectiveVariable => "slipway.catalog.v1.EffectiveVariable",
    slipway_proto::catalog::v1::DeploymentRule => "slipway.catalog.v1.DeploymentRule",
    slipway_proto::deploy::v1::Deployment => "slipway.deploy.v1.Deployment",
    slipway_proto::deploy::v1::EnvironmentStatus => "slipway.deploy.v1.EnvironmentStatus",
    slipway_proto::logs::v1::LogLine => "slipway.logs.v1.LogLine",
);

fn pool() -> anyhow::Result<&'static DescriptorPool> {
    static POOL: OnceLock<Option<DescriptorPool>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(slipway_proto::FILE_DESCRIPTOR_SET).ok())
        .as_ref()
        .context("the embedded descriptor set does not decode")
}

pub fn json<M: Named>(message: &M) -> anyhow::Result<serde_json::Value> {
    let descriptor = pool()?
        .get_message_by_name(M::NAME)
        .with_context(|| format!("{} is not in the descriptor set", M::NAME))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .with_context(|| format!("cannot read a {}", M::NAME))?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false);
    Ok(dynamic.serialize_with_options(serde_json::value::Serializer, &options)?)
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// One message: JSON, or `key: value` lines from `fields`.
pub fn one<M: Named>(format: Format, message: &M, fields: &[(&str, String)]) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(&json(message)?),
        Format::Table => {
            let width = fields.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
            for (key, value) in fields {
                println!("{:width$}  {value}", format!("{key}:"), width = width + 1);
            }
            Ok(())
        }
    }
}

/// A list: a JSON array, or a table with `headers` and one row per item. `noun` (plural)
/// says what an empty table would have held.
pub fn list<M: Named>(
    format: Format,
    items: &[M],
    noun: &str,
    headers: &[&str],
    row: impl Fn(&M) -> Vec<String>,
) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            let values = items.iter().map(json).collect::<anyhow::Result<Vec<_>>>()?;
            print_json(&serde_json::Value::Array(values))
        }
        Format::Table => {
            if items.is_empty() {
                eprintln!("no {noun}");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = items.iter().map(row).collect();
            table(headers, &rows);
            Ok(())
        }
    }
}

/// Prints aligned columns; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let width = widths.get(i).copied().unwrap_or(0);
                out.push_str(&" ".repeat(width.saturating_sub(cell.chars().count()) + 2));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `-` for an empty cell, so columns stay readable.
pub fn or_dash(value: &str) -> String {
    if value.is_empty() {
        "-".to_owned()
    } else {
        value.to_owned()
    }
}

/// An enum value without its type prefix: `DEPLOYMENT_STATUS_DEPLOYED` → `DEPLOYED`.
macro_rules! label {
    ($ty:ty, $value:expr) => {{
        let value: i32 = $value;
        match <$ty>::try_from(value) {
            Ok(known) => $crate::output::strip_prefix(known.as_str_name()),
            Err(_) => value.to_string(),
        }
    }};
}
pub(crate) use label;

/// Strips the enum's own name from a value name: the value names of an enum all start with
/// it (API style), so the prefix is what every value shares with `..._UNSPECIFIED`.
pub fn strip_prefix(name: &str) -> String {
    // Values are `<ENUM>_<VALUE>`; `<ENUM>` is found through the known enum prefixes.
    for prefix in PREFIXES {
        if let Some(rest) = name.strip_prefix(prefix) {
            return rest.to_owned();
        }
    }
    name.to_owned()
}

const PREFIXES: &[&str] = &[
    "DEPLOYMENT_STATUS_",
    "DEPLOYMENT_ACTION_",
    "DEPLOYMENT_TRIGGER_",
    "STAGE_KIND_",
    "STAGE_STATUS_",
    "STEP_STATUS_",
    "SERVICE_DEPLOYMENT_STATE_",
    "SERVICE_KIND_",
    "RUNTIME_STATE_",
    "ENVIRONMENT_MODE_",
    "CLUSTER_KIND_",
    "CLUSTER_CONNECTION_STATE_",
    "DATABASE_ENGINE_",
    "VARIABLE_KIND_",
    "VARIABLE_SCOPE_",
    "BUILTIN_ROLE_",
    "PRINCIPAL_KIND_",
    "WEEKDAY_",
    "LOG_KIND_",
    "LOG_STREAM_",
    "LOG_SEVERITY_",
    "PORT_PROTOCOL_",
];

/// A timestamp as `2026-11-26 23:36:12Z`; `-` when unset.
pub fn time(timestamp: Option<&prost_types::Timestamp>) -> String {
    timestamp
        .and_then(|t| {
            chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
        })
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".to_owned())
}

/// How long ago `timestamp` was, for list columns: `42s`, `5m`, `3h`, `2d`.
pub fn age(timestamp: Option<&prost_types::Timestamp>) -> String {
    let Some(t) = timestamp else {
        return "-".to_owned();
    };
    let now = chrono::Utc::now().timestamp();
    let seconds = (now - t.seconds).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_proto::catalog::v1 as cpb;

    #[test]
    fn json_keeps_proto_names_every_field_and_enum_names() {
        let environment = cpb::Environment {
            id: "e1".into(),
            name: "staging".into(),
            mode: slipway_proto::common::v1::EnvironmentMode::Staging.into(),
            create_time: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            ..Default::default()
        };
        let value = json(&environment).ok();
        let value = value.as_ref().and_then(|v| v.as_object());
        let field = |name: &str| value.and_then(|v| v.get(name)).cloned();
        assert_eq!(field("mode"), Some("ENVIRONMENT_MODE_STAGING".into()));
        assert_eq!(
            field("project_id"),
            Some("".into()),
            "unset fields are present"
        );
        assert_eq!(field("blueprint"), Some(false.into()));
        assert_eq!(field("create_time"), Some("1970-01-01T00:00:00Z".into()));
    }

    #[test]
    fn labels_drop_the_enum_prefix() {
        use slipway_proto::deploy::v1::DeploymentStatus;
        assert_eq!(
            label!(DeploymentStatus, DeploymentStatus::DeploymentError.into()),
            "DEPLOYMENT_ERROR"
        );
        assert_eq!(label!(DeploymentStatus, 999), "999");
    }
}
