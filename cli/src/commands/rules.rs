//! Deployment rules: schedules that start and stop (or delete) non-production
//! environments, on one environment or on a project's environments of some modes.

use prost_types::FieldMask;
use slipway_proto::{catalog::v1 as cpb, common::v1::EnvironmentMode};
use tonic::Request;

use crate::app::App;
use crate::client::{Client, all_pages};
use crate::commands::catalog::ModeArg;
use crate::commands::identity::{deleted, nothing_to_update};
use crate::errors::UserError;
use crate::output::{self, label, or_dash, time};

pub const RULE_EXAMPLES: &str = "Examples:
  # office hours for the staging environment:
  slipway rule create office-hours -e staging --weekdays mon-fri \\
      --start 08:00 --stop 19:00 --timezone Europe/Paris
  # delete the project's preview environments every night:
  slipway rule create nightly-cleanup --project-wide --modes preview --auto-delete \\
      --weekdays mon-sun --stop 02:00 --timezone UTC
  # keep the project's pr-* environments up late, over the office-hours rule:
  slipway rule create demos --project-wide --pattern 'pr-*' --priority 10 \\
      --weekdays mon-fri --start 08:00 --stop 23:00 --timezone Europe/Paris
  slipway rule list
  slipway rule update office-hours --disable
  slipway rule delete office-hours";

/// Settings of a rule; on update, only those given change.
#[derive(Debug, clap::Args)]
pub struct RuleSpec {
    /// Days it acts on: mon,tue,… or a range like mon-fri.
    #[arg(long)]
    weekdays: Option<String>,
    /// Local time environments are started (HH:MM); with auto-stop only.
    #[arg(long, value_name = "HH:MM")]
    start: Option<String>,
    /// Local time environments are stopped or deleted (HH:MM).
    #[arg(long, value_name = "HH:MM")]
    stop: Option<String>,
    /// IANA time zone of --start and --stop.
    #[arg(long)]
    timezone: Option<String>,
    /// Delete environments at --stop instead of stopping them.
    #[arg(long)]
    auto_delete: bool,
    /// Environment modes a project-wide rule covers (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    modes: Vec<ModeArg>,
    /// Environment names a project-wide rule covers: a glob, `*` any characters, `?` one
    /// (e.g. "pr-*"). Default: every name.
    #[arg(long, value_name = "GLOB")]
    pattern: Option<String>,
    /// Which project-wide rule acts on an environment several cover: the highest
    /// priority (0-1000, default 0).
    #[arg(long)]
    priority: Option<i32>,
}

#[derive(Debug, clap::Subcommand)]
pub enum RuleCommand {
    /// Creates a rule on the environment, or with --project-wide on the project.
    #[command(after_help = RULE_EXAMPLES)]
    Create {
        name: String,
        /// Attach the rule to the project (covering --modes) instead of one environment.
        #[arg(long)]
        project_wide: bool,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
        #[command(flatten)]
        spec: RuleSpec,
    },
    /// Lists the rules of the environment, or with --project-wide of the project.
    #[command(after_help = RULE_EXAMPLES)]
    List {
        #[arg(long)]
        project_wide: bool,
    },
    /// Shows one rule (name or id).
    #[command(after_help = RULE_EXAMPLES)]
    Get {
        rule: String,
        #[arg(long)]
        project_wide: bool,
    },
    /// Changes a rule.
    #[command(after_help = RULE_EXAMPLES)]
    Update {
        rule: String,
        #[arg(long)]
        project_wide: bool,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
        #[command(flatten)]
        spec: RuleSpec,
    },
    /// Deletes a rule.
    #[command(after_help = RULE_EXAMPLES)]
    Delete {
        rule: String,
        #[arg(long)]
        project_wide: bool,
    },
}

const DAYS: [(&str, cpb::Weekday); 7] = [
    ("mon", cpb::Weekday::Monday),
    ("tue", cpb::Weekday::Tuesday),
    ("wed", cpb::Weekday::Wednesday),
    ("thu", cpb::Weekday::Thursday),
    ("fri", cpb::Weekday::Friday),
    ("sat", cpb::Weekday::Saturday),
    ("sun", cpb::Weekday::Sunday),
];

fn day_index(name: &str) -> anyhow::Result<usize> {
    let name = name.trim().to_ascii_lowercase();
    DAYS.iter()
        .position(|(short, _)| name.starts_with(short))
        .ok_or_else(|| {
            UserError::hinted(
                format!("{name:?} is not a weekday"),
                "use mon, tue, wed, thu, fri, sat, sun, or a range like mon-fri",
            )
            .into()
        })
}

/// `mon-fri`, `sat,sun`, `mon,wed-fri`.
fn parse_weekdays(text: &str) -> anyhow::Result<Vec<i32>> {
    let mut days = Vec::new();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((first, last)) => (day_index(first)?, day_index(last)?),
            None => {
                let day = day_index(part)?;
                (day, day)
            }
        };
        for (_, day) in DAYS.iter().take(last + 1).skip(first) {
            let day = i32::from(*day);
            if !days.contains(&day) {
                days.push(day);
            }
        }
    }
    Ok(days)
}

fn parse_time_of_day(text: &str) -> anyhow::Result<cpb::TimeOfDay> {
    let bad = || {
        UserError::hinted(
            format!("{text:?} is not a time of day"),
            "write HH:MM, e.g. 08:30",
        )
    };
    let (hours, minutes) = text.trim().split_once(':').ok_or_else(bad)?;
    Ok(cpb::TimeOfDay {
        hours: hours.parse().map_err(|_| bad())?,
        minutes: minutes.parse().map_err(|_| bad())?,
    })
}

impl RuleSpec {
    /// The flags onto `rule`; answers the mask paths they touch.
    fn apply(&self, rule: &mut cpb::DeploymentRule) -> anyhow::Result<Vec<String>> {
        let mut paths = Vec::new();
        if let Some(weekdays) = &self.weekdays {
            rule.weekdays = parse_weekdays(weekdays)?;
            paths.push("weekdays".to_owned());
        }
        if let Some(start) = &self.start {
            rule.start_at = Some(parse_time_of_day(start)?);
            paths.push("start_at".to_owned());
        }
        if let Some(stop) = &self.stop {
            rule.stop_at = Some(parse_time_of_day(stop)?);
            paths.push("stop_at".to_owned());
        }
        if let Some(timezone) = &self.timezone {
            rule.timezone.clone_from(timezone);
            paths.push("timezone".to_owned());
        }
        if self.auto_delete {
            rule.auto_delete = true;
            rule.auto_stop = false;
            paths.push("auto_delete".to_owned());
            paths.push("auto_stop".to_owned());
        }
        if !self.modes.is_empty() {
            rule.environment_modes = self.modes.iter().map(|m| i32::from(m.proto())).collect();
            paths.push("environment_modes".to_owned());
        }
        if let Some(pattern) = &self.pattern {
            rule.environment_name_pattern.clone_from(pattern);
            paths.push("environment_name_pattern".to_owned());
        }
        if let Some(priority) = self.priority {
            rule.priority = priority;
            paths.push("priority".to_owned());
        }
        Ok(paths)
    }
}

fn time_of_day(t: Option<&cpb::TimeOfDay>) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| format!("{:02}:{:02}", t.hours, t.minutes),
    )
}

fn weekdays(rule: &cpb::DeploymentRule) -> String {
    rule.weekdays
        .iter()
        .map(|d| {
            label!(cpb::Weekday, *d)
                .chars()
                .take(3)
                .collect::<String>()
                .to_lowercase()
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn rule_fields(r: &cpb::DeploymentRule) -> Vec<(&'static str, String)> {
    let modes: Vec<String> = r
        .environment_modes
        .iter()
        .map(|m| label!(EnvironmentMode, *m).to_lowercase())
        .collect();
    vec![
        ("id", r.id.clone()),
        ("name", r.name.clone()),
        ("enabled", r.enabled.to_string()),
        (
            "action",
            if r.auto_delete {
                "delete".into()
            } else {
                "stop/start".into()
            },
        ),
        ("weekdays", weekdays(r)),
        ("start", time_of_day(r.start_at.as_ref())),
        ("stop", time_of_day(r.stop_at.as_ref())),
        ("timezone", r.timezone.clone()),
        ("modes", or_dash(&modes.join(","))),
        ("pattern", or_dash(&r.environment_name_pattern)),
        ("priority", r.priority.to_string()),
        ("next start", time(r.next_start_time.as_ref())),
        ("next stop", time(r.next_stop_time.as_ref())),
    ]
}

#[derive(Clone)]
enum Target {
    Project(String),
    Environment(String),
}

async fn target(app: &App, client: &Client, project_wide: bool) -> anyhow::Result<Target> {
    Ok(if project_wide {
        Target::Project(app.project_id(client).await?)
    } else {
        Target::Environment(app.environment_id(client).await?)
    })
}

async fn list_rules(client: &Client, target: &Target) -> anyhow::Result<Vec<cpb::DeploymentRule>> {
    use cpb::list_deployment_rules_request::Target as T;
    let target = match target {
        Target::Project(id) => T::ProjectId(id.clone()),
        Target::Environment(id) => T::EnvironmentId(id.clone()),
    };
    Ok(all_pages(|page_token| {
        let mut rules = client.rules();
        let request = cpb::ListDeploymentRulesRequest {
            target: Some(target.clone()),
            page_size: 500,
            page_token,
        };
        async move {
            let response = rules.list_deployment_rules(request).await?.into_inner();
            Ok((response.deployment_rules, response.next_page_token))
        }
    })
    .await?)
}

async fn find_rule(
    app: &App,
    client: &Client,
    value: &str,
    project_wide: bool,
) -> anyhow::Result<cpb::DeploymentRule> {
    if crate::app::is_id(value) {
        return Ok(client
            .rules()
            .get_deployment_rule(Request::new(cpb::GetDeploymentRuleRequest {
                id: value.to_owned(),
            }))
            .await?
            .into_inner()
            .deployment_rule
            .unwrap_or_default());
    }
    let target = target(app, client, project_wide).await?;
    list_rules(client, &target)
        .await?
        .into_iter()
        .find(|r| r.name == value)
        .ok_or_else(|| crate::app::not_found("deployment rule", value, "slipway rule list"))
}

pub async fn rule(app: &App, command: RuleCommand) -> anyhow::Result<()> {
    let client = app.client()?;
    let format = app.format;
    match command {
        RuleCommand::Create {
            name,
            project_wide,
            disabled,
            spec,
        } => {
            let mut rule = cpb::DeploymentRule {
                name,
                enabled: !disabled,
                auto_stop: true,
                timezone: "UTC".to_owned(),
                ..Default::default()
            };
            spec.apply(&mut rule)?;
            use cpb::create_deployment_rule_request::Target as T;
            let target = match target(app, &client, project_wide).await? {
                Target::Project(id) => T::ProjectId(id),
                Target::Environment(id) => T::EnvironmentId(id),
            };
            let created = client
                .rules()
                .create_deployment_rule(Request::new(cpb::CreateDeploymentRuleRequest {
                    target: Some(target),
                    deployment_rule: Some(rule),
                    request_id: String::new(),
                }))
                .await?
                .into_inner()
                .deployment_rule
                .unwrap_or_default();
            output::one(format, &created, &rule_fields(&created))
        }
        RuleCommand::List { project_wide } => {
            let target = target(app, &client, project_wide).await?;
            let rules = list_rules(&client, &target).await?;
            output::list(
                format,
                &rules,
                "deployment rules",
                &[
                    "NAME", "ENABLED", "WEEKDAYS", "START", "STOP", "TIMEZONE", "ID",
                ],
                |r| {
                    vec![
                        r.name.clone(),
                        r.enabled.to_string(),
                        weekdays(r),
                        time_of_day(r.start_at.as_ref()),
                        time_of_day(r.stop_at.as_ref()),
                        r.timezone.clone(),
                        r.id.clone(),
                    ]
                },
            )
        }
        RuleCommand::Get { rule, project_wide } => {
            let found = find_rule(app, &client, &rule, project_wide).await?;
            output::one(format, &found, &rule_fields(&found))
        }
        RuleCommand::Update {
            rule,
            project_wide,
            name,
            enable,
            disable,
            spec,
        } => {
            let mut found = find_rule(app, &client, &rule, project_wide).await?;
            let mut paths = spec.apply(&mut found)?;
            if let Some(name) = name {
                found.name = name;
                paths.push("name".to_owned());
            }
            if enable || disable {
                found.enabled = enable;
                paths.push("enabled".to_owned());
            }
            nothing_to_update(&paths, "--name, --enable/--disable or a schedule flag")?;
            let updated = client
                .rules()
                .update_deployment_rule(Request::new(cpb::UpdateDeploymentRuleRequest {
                    deployment_rule: Some(found),
                    update_mask: Some(FieldMask { paths }),
                }))
                .await?
                .into_inner()
                .deployment_rule
                .unwrap_or_default();
            output::one(format, &updated, &rule_fields(&updated))
        }
        RuleCommand::Delete { rule, project_wide } => {
            let found = find_rule(app, &client, &rule, project_wide).await?;
            client
                .rules()
                .delete_deployment_rule(Request::new(cpb::DeleteDeploymentRuleRequest {
                    id: found.id,
                    etag: String::new(),
                }))
                .await?;
            deleted(format, "deployment rule", &found.name);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekdays_read_lists_and_ranges() {
        let days = parse_weekdays("mon-wed,sun").ok();
        assert_eq!(
            days,
            Some(vec![
                cpb::Weekday::Monday.into(),
                cpb::Weekday::Tuesday.into(),
                cpb::Weekday::Wednesday.into(),
                cpb::Weekday::Sunday.into(),
            ])
        );
        assert!(parse_weekdays("someday").is_err());
        assert_eq!(
            parse_time_of_day("08:05").ok(),
            Some(cpb::TimeOfDay {
                hours: 8,
                minutes: 5
            })
        );
        assert!(parse_time_of_day("8h").is_err());
    }
}
