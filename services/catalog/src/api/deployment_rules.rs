//! `slipway.catalog.v1.DeploymentRuleService`: schedules that start and stop (or delete)
//! non-production environments, attached to a project (covering some modes of its
//! environments) or to one environment.
//!
//! A rule is a row of [`Kind::DeploymentRule`] whose `parent_id` is what it is attached to;
//! `project_id` is always set (authorization and cascading deletes need it) and
//! `environment_id` only on environment rules, which is how the two are told apart. The
//! next start and stop times are not stored: they depend on the clock, so they are computed
//! on every read.

use chrono::{DateTime, Utc};
use slipway_api::Violations;
use slipway_auth::rbac::{Action, EnvironmentMode as RbacMode, Principal, Resource, ResourceKind};
use slipway_proto::ApiError;
use slipway_proto::catalog::v1 as pb;
use slipway_proto::catalog::v1::deployment_rule_service_server::DeploymentRuleService;
use slipway_proto::common::v1::EnvironmentMode;
use slipway_proto::events::v1 as ev;
use tonic::{Request, Response, Status};

use super::{
    CatalogMessage as _, Context, Scope, authorize, caller, next_page_token, page_request,
    rbac_mode, request_key, require, timestamp,
};
use crate::mask::UpdateMask;
use crate::schedule::{WeekdayTime, WeekdayTimeError, parse_timezone, time_of_day};
use crate::store::{Children, Filter, Kind, NewRow, Row, RowChanges, StoreError, new_id};

/// The gRPC service; mount it behind `AuthenticateLayer`.
#[derive(Clone)]
pub struct DeploymentRules {
    ctx: Context,
}

impl DeploymentRules {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

/// The fields of a rule an update may change (the target is immutable).
const MUTABLE: &[&str] = &[
    "name",
    "enabled",
    "timezone",
    "weekdays",
    "start_at",
    "stop_at",
    "auto_stop",
    "auto_delete",
    "environment_modes",
    "environment_name_pattern",
    "priority",
];

/// Highest `priority` a rule may have.
const MAX_PRIORITY: i32 = 1000;

/// The modes a project rule with no `environment_modes` covers: every one but production,
/// which no rule may ever act on.
const NON_PRODUCTION: [EnvironmentMode; 3] = [
    EnvironmentMode::Staging,
    EnvironmentMode::Development,
    EnvironmentMode::Preview,
];

/// Row subtypes, so a listing can tell project rules from environment rules without
/// decoding specs.
const PROJECT_RULE: &str = "project";
const ENVIRONMENT_RULE: &str = "environment";

const PREFIX: &str = "deployment_rule.";

fn field(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// What a rule is attached to, as the request named it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Project(String),
    Environment(String),
}

impl Target {
    fn id(&self) -> &str {
        match self {
            Target::Project(id) | Target::Environment(id) => id,
        }
    }

    /// The target of a stored rule, from its columns (the spec does not keep it).
    fn of_row(row: &Row) -> Self {
        match &row.environment_id {
            Some(environment) => Target::Environment(environment.clone()),
            None => Target::Project(row.parent_id.clone()),
        }
    }
}

/// The target of a create or list request: exactly one, with an id.
fn request_target(
    project: Option<&str>,
    environment: Option<&str>,
    v: &mut Violations,
) -> Option<Target> {
    match (project, environment) {
        (Some(project), None) => {
            v.required("project_id", project);
            Some(Target::Project(project.to_owned()))
        }
        (None, Some(environment)) => {
            v.required("environment_id", environment);
            Some(Target::Environment(environment.to_owned()))
        }
        _ => {
            v.add(
                "project_id",
                "one of project_id and environment_id is required",
            );
            None
        }
    }
}

// ---- validation: one violation per field, each check usable alone (updates check the
// ---- paths of their mask before anything is read) and together (the merged rule).

fn validate_name(name: &str, v: &mut Violations) {
    let path = field("name");
    v.dns_label(&path, name);
    // The shared DNS-label check allows a leading digit; rule names must start with a
    // letter, as the proto says.
    if !v.has(&path) && !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        v.add(path, "must start with a lowercase letter");
    }
}

fn validate_timezone(timezone: &str, v: &mut Violations) {
    match parse_timezone(timezone) {
        Ok(_) => {}
        Err(crate::schedule::TimezoneError::Empty) => v.add(field("timezone"), "is required"),
        Err(error) => v.add(field("timezone"), error.to_string()),
    }
}

/// The chrono weekdays of a rule; `Err` with the message for `weekdays` otherwise.
fn weekdays(values: &[i32]) -> Result<Vec<chrono::Weekday>, String> {
    let mut days = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        let day = match pb::Weekday::try_from(*value) {
            Ok(pb::Weekday::Monday) => chrono::Weekday::Mon,
            Ok(pb::Weekday::Tuesday) => chrono::Weekday::Tue,
            Ok(pb::Weekday::Wednesday) => chrono::Weekday::Wed,
            Ok(pb::Weekday::Thursday) => chrono::Weekday::Thu,
            Ok(pb::Weekday::Friday) => chrono::Weekday::Fri,
            Ok(pb::Weekday::Saturday) => chrono::Weekday::Sat,
            Ok(pb::Weekday::Sunday) => chrono::Weekday::Sun,
            Ok(pb::Weekday::Unspecified) | Err(_) => {
                return Err(format!("weekdays[{i}] is not a day of the week"));
            }
        };
        days.push(day);
    }
    Ok(days)
}

fn validate_weekdays(values: &[i32], v: &mut Violations) {
    let path = field("weekdays");
    match weekdays(values) {
        Err(message) => v.add(path, message),
        // Any time of day will do: this only checks the list (non-empty, each day once).
        Ok(days) => match WeekdayTime::new(chrono::NaiveTime::MIN, &days) {
            Ok(_) => {}
            Err(WeekdayTimeError::NoWeekdays) => v.add(path, "at least one weekday is required"),
            Err(error) => v.add(path, error.to_string()),
        },
    }
}

fn validate_time(name: &str, time: Option<&pb::TimeOfDay>, required: bool, v: &mut Violations) {
    match time {
        None if required => v.add(field(name), "is required"),
        None => {}
        Some(time) => {
            if let Err(error) = time_of_day(time.hours, time.minutes) {
                v.add(field(name), error.to_string());
            }
        }
    }
}

/// Checks `environment_modes` of a rule attached to `target`.
fn validate_modes(modes: &[i32], environment_rule: bool, v: &mut Violations) {
    let path = field("environment_modes");
    if environment_rule {
        if !modes.is_empty() {
            v.add(path, "must be empty on an environment rule");
        }
        return;
    }
    let mut seen = Vec::with_capacity(modes.len());
    for (i, &mode) in modes.iter().enumerate() {
        let problem = match EnvironmentMode::try_from(mode) {
            Ok(EnvironmentMode::Production) => Some(
                "production environments are never started, stopped or deleted by a rule"
                    .to_owned(),
            ),
            Ok(EnvironmentMode::Unspecified) | Err(_) => {
                Some(format!("environment_modes[{i}] is not an environment mode"))
            }
            Ok(_) if seen.contains(&mode) => Some(format!(
                "environment_modes[{i}] lists a mode more than once"
            )),
            Ok(_) => None,
        };
        if let Some(problem) = problem {
            v.add(path, problem);
            return;
        }
        seen.push(mode);
    }
}

/// Checks `environment_name_pattern` and `priority`: project rules only.
fn validate_selection(rule: &pb::DeploymentRule, environment_rule: bool, v: &mut Violations) {
    let pattern = field("environment_name_pattern");
    let priority = field("priority");
    if environment_rule {
        if !rule.environment_name_pattern.is_empty() {
            v.add(pattern, "must be empty on an environment rule");
        }
        if rule.priority != 0 {
            v.add(
                priority,
                "must be 0 on an environment rule: it beats project rules",
            );
        }
        return;
    }
    if let Err(error) = slipway_api::glob::validate(&rule.environment_name_pattern) {
        v.add(pattern, error.to_string());
    }
    if !(0..=MAX_PRIORITY).contains(&rule.priority) {
        v.add(priority, format!("must be between 0 and {MAX_PRIORITY}"));
    }
}

/// Checks what only the whole rule can tell: exactly one action, no start with delete.
fn validate_consistency(rule: &pb::DeploymentRule, v: &mut Violations) {
    // Neither is a missing action (named on `auto_stop`, the common one); both is one
    // too many (named on `auto_delete`, the one that would destroy).
    match (rule.auto_stop, rule.auto_delete) {
        (false, false) => v.add(
            field("auto_stop"),
            "exactly one of auto_stop and auto_delete must be true",
        ),
        (true, true) => v.add(
            field("auto_delete"),
            "exactly one of auto_stop and auto_delete must be true",
        ),
        _ => {}
    }
    if rule.auto_delete && rule.start_at.is_some() && !v.has(&field("start_at")) {
        v.add(
            field("start_at"),
            "must be unset with auto_delete: a deleted environment cannot be started",
        );
    }
}

/// Every check, for a create or a merged update.
fn validate(rule: &pb::DeploymentRule, environment_rule: bool, v: &mut Violations) {
    validate_name(&rule.name, v);
    validate_timezone(&rule.timezone, v);
    validate_weekdays(&rule.weekdays, v);
    validate_time("start_at", rule.start_at.as_ref(), false, v);
    validate_time("stop_at", rule.stop_at.as_ref(), true, v);
    validate_modes(&rule.environment_modes, environment_rule, v);
    validate_selection(rule, environment_rule, v);
    validate_consistency(rule, v);
}

/// The modes a project rule covers (an environment rule covers its environment alone).
fn covered_modes(rule: &pb::DeploymentRule) -> Vec<RbacMode> {
    if rule.environment_modes.is_empty() {
        NON_PRODUCTION
            .iter()
            .filter_map(|mode| rbac_mode((*mode).into()))
            .collect()
    } else {
        rule.environment_modes
            .iter()
            .filter_map(|mode| rbac_mode(*mode))
            .collect()
    }
}

/// The next time after `now` that `time` on the rule's weekdays comes round in its time
/// zone; `None` when the stored rule cannot say (it was validated on write, so only a
/// corrupt row gets here, and a read should still answer).
fn next_time(
    rule: &pb::DeploymentRule,
    time: Option<&pb::TimeOfDay>,
    now: DateTime<Utc>,
) -> Option<prost_types::Timestamp> {
    let time = time?;
    let tz = parse_timezone(&rule.timezone).ok()?;
    let local = time_of_day(time.hours, time.minutes).ok()?;
    let days = weekdays(&rule.weekdays).ok()?;
    let schedule = WeekdayTime::new(local, &days).ok()?;
    let next = schedule.next_after(&now.with_timezone(&tz))?;
    Some(timestamp(next.with_timezone(&Utc)))
}

/// A stored rule as the API shows it: target from the columns, next times from `now`.
fn rule_of(row: &Row, now: DateTime<Utc>) -> Result<pb::DeploymentRule, ApiError> {
    let mut rule = pb::DeploymentRule::from_row(row)?;
    rule.target = Some(match Target::of_row(row) {
        Target::Project(id) => pb::deployment_rule::Target::ProjectId(id),
        Target::Environment(id) => pb::deployment_rule::Target::EnvironmentId(id),
    });
    if rule.enabled {
        if rule.auto_stop {
            rule.next_start_time = next_time(&rule, rule.start_at.as_ref(), now);
        }
        rule.next_stop_time = next_time(&rule, rule.stop_at.as_ref(), now);
    }
    Ok(rule)
}

/// The spec bytes of a rule: the target lives in the columns, not twice.
fn spec_of(rule: &pb::DeploymentRule) -> Vec<u8> {
    let mut stored = rule.clone();
    stored.target = None;
    stored.to_spec()
}

fn now() -> DateTime<Utc> {
    crate::store::now()
}

/// Where a rule sits, loaded: its organization and project, and for an environment rule
/// the environment's scope (with its mode).
struct Place {
    target: Target,
    organization_id: String,
    project_id: String,
    environment: Option<Scope>,
}

impl Place {
    /// The scope RBAC reads for a read: the project, or the environment and its mode.
    fn read_resource(&self) -> Resource<'_> {
        match &self.environment {
            Some(scope) => scope.resource(),
            None => Resource::in_organization(&self.organization_id).in_project(&self.project_id),
        }
    }

    fn is_environment(&self) -> bool {
        self.environment.is_some()
    }

    fn environment_mode(&self) -> Option<RbacMode> {
        self.environment
            .as_ref()
            .and_then(|scope| scope.environment.as_ref().map(|(_, mode)| *mode))
    }
}

impl DeploymentRules {
    /// Loads what `target` names; NOT_FOUND when it is not there.
    async fn place(&self, target: Target) -> Result<Place, ApiError> {
        match &target {
            Target::Project(id) => {
                let project = self.ctx.row(Kind::Project, id).await?;
                Ok(Place {
                    organization_id: project.organization_id.clone(),
                    project_id: project.id.clone(),
                    environment: None,
                    target,
                })
            }
            Target::Environment(id) => {
                let scope = self.ctx.scope_of_environment(id).await?;
                Ok(Place {
                    organization_id: scope.organization_id.clone(),
                    project_id: scope.project_id.clone(),
                    environment: Some(scope),
                    target,
                })
            }
        }
    }

    /// The place of a stored rule.
    async fn place_of(&self, row: &Row) -> Result<Place, ApiError> {
        self.place(Target::of_row(row)).await
    }

    /// Authorizes reading the rules of `place`: an outsider, or a member who may not see
    /// it, gets NOT_FOUND naming `kind` and `id`.
    fn authorize_read(
        principal: &Principal,
        place: &Place,
        kind: Kind,
        id: &str,
    ) -> Result<(), ApiError> {
        authorize(
            principal,
            Action::CatalogDeploymentRulesRead,
            &place.read_resource().of_kind(ResourceKind::DeploymentRule),
            kind,
            id,
        )
    }

    /// Authorizes writing a rule of `place` covering `rule`'s modes: MANAGER for the
    /// environment's mode, or for every mode a project rule covers. A caller who may read
    /// the rules but lacks a mode gets PERMISSION_DENIED (it knows they exist); anyone
    /// else NOT_FOUND.
    fn authorize_write(
        principal: &Principal,
        place: &Place,
        rule: &pb::DeploymentRule,
        kind: Kind,
        id: &str,
    ) -> Result<(), ApiError> {
        let action = Action::CatalogDeploymentRulesWrite;
        let base = place.read_resource().of_kind(ResourceKind::DeploymentRule);
        if place.is_environment() {
            return authorize(principal, action, &base, kind, id);
        }
        Self::authorize_read(principal, place, kind, id)?;
        for mode in covered_modes(rule) {
            match authorize(principal, action, &base.in_mode(mode), kind, id) {
                Ok(()) => {}
                Err(ApiError::NotFound { .. }) => {
                    return Err(ApiError::PermissionDenied {
                        permission: action.as_str().to_owned(),
                    });
                }
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    /// The rule, other than `except`, that keeps `rule` from being stored at `place`: the
    /// environment's existing rule, or a project rule of the same priority that could
    /// cover the same environment (a shared mode, and patterns a name could match both):
    /// which of the two acts there would be a coin toss.
    async fn conflict(
        &self,
        place: &Place,
        rule: &pb::DeploymentRule,
        except: Option<&str>,
    ) -> Result<Option<Row>, ApiError> {
        let filter = Filter {
            organization_id: place.organization_id.clone(),
            parent_id: Some(place.target.id().to_owned()),
            ..Filter::default()
        };
        let others = self
            .ctx
            .store
            .list_all(Kind::DeploymentRule, &filter)
            .await?;
        let mine = covered_modes(rule);
        for other in others {
            if Some(other.id.as_str()) == except {
                continue;
            }
            if place.is_environment() {
                return Ok(Some(other));
            }
            let theirs = pb::DeploymentRule::from_row(&other)?;
            if theirs.priority == rule.priority
                && covered_modes(&theirs)
                    .iter()
                    .any(|mode| mine.contains(mode))
                && slipway_api::glob::may_overlap(
                    &theirs.environment_name_pattern,
                    &rule.environment_name_pattern,
                )
            {
                return Ok(Some(other));
            }
        }
        Ok(None)
    }

    async fn create(
        &self,
        principal: &Principal,
        request: pb::CreateDeploymentRuleRequest,
    ) -> Result<pb::DeploymentRule, ApiError> {
        use pb::create_deployment_rule_request::Target as T;
        let mut v = Violations::new();
        let target = match &request.target {
            Some(T::ProjectId(id)) => request_target(Some(id), None, &mut v),
            Some(T::EnvironmentId(id)) => request_target(None, Some(id), &mut v),
            None => request_target(None, None, &mut v),
        };
        v.request_id(&request.request_id);
        let mut rule = request.deployment_rule.unwrap_or_default();
        validate(
            &rule,
            matches!(target, Some(Target::Environment(_))),
            &mut v,
        );
        v.finish()?;
        let Some(target) = target else {
            // Unreachable: a missing target is a violation above.
            return Err(ApiError::InvalidArgument(Vec::new()));
        };
        let (target_kind, target_id) = match &target {
            Target::Project(id) => (Kind::Project, id.clone()),
            Target::Environment(id) => (Kind::Environment, id.clone()),
        };
        let place = self.place(target).await?;
        Self::authorize_write(principal, &place, &rule, target_kind, &target_id)?;
        if place.environment_mode() == Some(RbacMode::Production) {
            return Err(super::precondition(
                "PRODUCTION_ENVIRONMENT",
                "environment",
                "production environments are never started, stopped or deleted by a rule"
                    .to_owned(),
            ));
        }
        // Output-only fields are ignored.
        rule.id.clear();
        rule.organization_id.clear();
        rule.create_time = None;
        rule.update_time = None;
        rule.etag.clear();
        rule.next_start_time = None;
        rule.next_stop_time = None;
        let org = place.organization_id.clone();
        let new = NewRow {
            id: new_id(),
            organization_id: org.clone(),
            parent_id: place.target.id().to_owned(),
            name: rule.name.clone(),
            subtype: if place.is_environment() {
                ENVIRONMENT_RULE
            } else {
                PROJECT_RULE
            }
            .to_owned(),
            project_id: Some(place.project_id.clone()),
            environment_id: place.is_environment().then(|| place.target.id().to_owned()),
            spec: spec_of(&rule),
            ..NewRow::default()
        };
        let key = request_key(&org, "CreateDeploymentRule", &request.request_id);
        let (row, created) = match self.conflict(&place, &rule, None).await? {
            None => {
                self.ctx
                    .store
                    .insert(Kind::DeploymentRule, new, key)
                    .await?
            }
            Some(existing) => self.replay_or_refuse(&place, new, key, &existing).await?,
        };
        if created {
            self.publish(principal, &row, "created", false).await;
        }
        rule_of(&row, now())
    }

    /// Answers a create that conflicts with `existing`: a repeat of a recorded request id
    /// returns the first result (its rule is typically the very one it conflicts with),
    /// anything else ALREADY_EXISTS. The store replays a recorded key before it inserts
    /// anything, so the insert tried here carries the key and `existing`'s own name and
    /// parent: it either replays, or fails on the name and writes nothing.
    async fn replay_or_refuse(
        &self,
        place: &Place,
        mut new: NewRow,
        key: Option<crate::store::RequestKey>,
        existing: &Row,
    ) -> Result<(Row, bool), ApiError> {
        let refused = || {
            let what = if place.is_environment() {
                "the environment already has a deployment rule"
            } else {
                "a deployment rule of the project with the same priority already covers some of these environments"
            };
            tracing::debug!(rule = %existing.id, "{what}");
            ApiError::already_exists(Kind::DeploymentRule.as_str(), existing.name.clone())
        };
        if key.is_none() || existing.parent_id != new.parent_id {
            return Err(refused());
        }
        new.name = existing.name.clone();
        match self.ctx.store.insert(Kind::DeploymentRule, new, key).await {
            Ok((row, false)) => Ok((row, false)),
            Ok((row, true)) => {
                // Cannot happen (the name is taken), but never leave a second rule behind.
                if let Err(error) = self
                    .ctx
                    .store
                    .delete(Kind::DeploymentRule, &row.id, None, Children::Refuse)
                    .await
                {
                    tracing::error!(%error, rule = %row.id, "cannot remove a duplicate rule");
                }
                Err(refused())
            }
            Err(StoreError::AlreadyExists(_)) => Err(refused()),
            Err(other) => Err(other.into()),
        }
    }

    async fn get(&self, principal: &Principal, id: &str) -> Result<pb::DeploymentRule, ApiError> {
        require("id", id)?;
        let row = self.ctx.row(Kind::DeploymentRule, id).await?;
        let place = self.place_of(&row).await?;
        Self::authorize_read(principal, &place, Kind::DeploymentRule, id)?;
        rule_of(&row, now())
    }

    async fn list(
        &self,
        principal: &Principal,
        request: pb::ListDeploymentRulesRequest,
    ) -> Result<pb::ListDeploymentRulesResponse, ApiError> {
        use pb::list_deployment_rules_request::Target as T;
        let mut v = Violations::new();
        let target = match &request.target {
            Some(T::ProjectId(id)) => request_target(Some(id), None, &mut v),
            Some(T::EnvironmentId(id)) => request_target(None, Some(id), &mut v),
            None => request_target(None, None, &mut v),
        };
        let query = match &target {
            Some(Target::Project(id)) => format!("deployment_rules/project/{id}"),
            Some(Target::Environment(id)) => format!("deployment_rules/environment/{id}"),
            None => String::new(),
        };
        let page = page_request(request.page_size, &request.page_token, &query, &mut v);
        v.finish()?;
        let Some(target) = target else {
            return Err(ApiError::InvalidArgument(Vec::new()));
        };
        let (kind, id) = match &target {
            Target::Project(id) => (Kind::Project, id.clone()),
            Target::Environment(id) => (Kind::Environment, id.clone()),
        };
        let place = self.place(target).await?;
        Self::authorize_read(principal, &place, kind, &id)?;
        let filter = Filter {
            organization_id: place.organization_id.clone(),
            parent_id: Some(place.target.id().to_owned()),
            ..Filter::default()
        };
        let found = self
            .ctx
            .store
            .list_by(Kind::DeploymentRule, &filter, &page)
            .await?;
        let now = now();
        let deployment_rules = found
            .rows
            .iter()
            .map(|row| rule_of(row, now))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(pb::ListDeploymentRulesResponse {
            deployment_rules,
            next_page_token: next_page_token(found.next, &query),
        })
    }

    async fn update(
        &self,
        principal: &Principal,
        request: pb::UpdateDeploymentRuleRequest,
    ) -> Result<pb::DeploymentRule, ApiError> {
        let update = request.deployment_rule.unwrap_or_default();
        let mut v = Violations::new();
        v.required(&field("id"), &update.id);
        let mask = UpdateMask::parse(request.update_mask.as_ref(), MUTABLE, &mut v);
        if mask.has("name") {
            validate_name(&update.name, &mut v);
        }
        if mask.has("timezone") {
            validate_timezone(&update.timezone, &mut v);
        }
        if mask.has("weekdays") {
            validate_weekdays(&update.weekdays, &mut v);
        }
        if mask.has("start_at") {
            validate_time("start_at", update.start_at.as_ref(), false, &mut v);
        }
        if mask.has("stop_at") {
            validate_time("stop_at", update.stop_at.as_ref(), true, &mut v);
        }
        v.finish()?;
        let row = self.ctx.row(Kind::DeploymentRule, &update.id).await?;
        let place = self.place_of(&row).await?;
        let before = pb::DeploymentRule::from_row(&row)?;
        Self::authorize_write(principal, &place, &before, Kind::DeploymentRule, &row.id)?;
        let mut rule = before.clone();
        if mask.has("name") {
            rule.name = update.name.clone();
        }
        if mask.has("enabled") {
            rule.enabled = update.enabled;
        }
        if mask.has("timezone") {
            rule.timezone = update.timezone.clone();
        }
        if mask.has("weekdays") {
            rule.weekdays = update.weekdays.clone();
        }
        if mask.has("start_at") {
            rule.start_at = update.start_at;
        }
        if mask.has("stop_at") {
            rule.stop_at = update.stop_at;
        }
        if mask.has("auto_stop") {
            rule.auto_stop = update.auto_stop;
        }
        if mask.has("auto_delete") {
            rule.auto_delete = update.auto_delete;
        }
        if mask.has("environment_modes") {
            rule.environment_modes = update.environment_modes.clone();
        }
        if mask.has("environment_name_pattern") {
            rule.environment_name_pattern = update.environment_name_pattern.clone();
        }
        if mask.has("priority") {
            rule.priority = update.priority;
        }
        let mut v = Violations::new();
        validate(&rule, place.is_environment(), &mut v);
        v.finish()?;
        if !place.is_environment() && covered_modes(&rule) != covered_modes(&before) {
            Self::authorize_write(principal, &place, &rule, Kind::DeploymentRule, &row.id)?;
        }
        if !place.is_environment()
            && let Some(existing) = self.conflict(&place, &rule, Some(&row.id)).await?
        {
            return Err(ApiError::already_exists(
                Kind::DeploymentRule.as_str(),
                existing.name,
            ));
        }
        let changes = RowChanges {
            name: Some(rule.name.clone()),
            spec: Some(spec_of(&rule)),
            ..RowChanges::default()
        };
        let etag = (!update.etag.is_empty()).then_some(update.etag.as_str());
        let row = self
            .ctx
            .store
            .update(Kind::DeploymentRule, &row.id, etag, changes)
            .await?;
        self.publish(principal, &row, "updated", false).await;
        rule_of(&row, now())
    }

    async fn delete(
        &self,
        principal: &Principal,
        request: pb::DeleteDeploymentRuleRequest,
    ) -> Result<(), ApiError> {
        require("id", &request.id)?;
        let row = self.ctx.row(Kind::DeploymentRule, &request.id).await?;
        let place = self.place_of(&row).await?;
        let rule = pb::DeploymentRule::from_row(&row)?;
        Self::authorize_write(principal, &place, &rule, Kind::DeploymentRule, &row.id)?;
        let etag = (!request.etag.is_empty()).then_some(request.etag.as_str());
        self.ctx
            .store
            .delete(Kind::DeploymentRule, &row.id, etag, Children::Refuse)
            .await?;
        self.publish(principal, &row, "deleted", true).await;
        Ok(())
    }

    async fn publish(&self, principal: &Principal, row: &Row, verb: &str, deleted: bool) {
        self.ctx
            .publish(
                principal,
                &row.organization_id,
                "deployment_rule",
                verb,
                ev::event::Payload::DeploymentRuleChanged(ev::DeploymentRuleChanged {
                    deployment_rule_id: row.id.clone(),
                    project_id: row.project_id.clone().unwrap_or_default(),
                    deleted,
                }),
            )
            .await;
    }
}

#[tonic::async_trait]
impl DeploymentRuleService for DeploymentRules {
    async fn create_deployment_rule(
        &self,
        request: Request<pb::CreateDeploymentRuleRequest>,
    ) -> Result<Response<pb::CreateDeploymentRuleResponse>, Status> {
        let principal = caller(&request)?;
        let deployment_rule = self.create(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::CreateDeploymentRuleResponse {
            deployment_rule: Some(deployment_rule),
        }))
    }

    async fn get_deployment_rule(
        &self,
        request: Request<pb::GetDeploymentRuleRequest>,
    ) -> Result<Response<pb::GetDeploymentRuleResponse>, Status> {
        let principal = caller(&request)?;
        let deployment_rule = self.get(&principal, &request.get_ref().id).await?;
        Ok(Response::new(pb::GetDeploymentRuleResponse {
            deployment_rule: Some(deployment_rule),
        }))
    }

    async fn list_deployment_rules(
        &self,
        request: Request<pb::ListDeploymentRulesRequest>,
    ) -> Result<Response<pb::ListDeploymentRulesResponse>, Status> {
        let principal = caller(&request)?;
        Ok(Response::new(
            self.list(&principal, request.into_inner()).await?,
        ))
    }

    async fn update_deployment_rule(
        &self,
        request: Request<pb::UpdateDeploymentRuleRequest>,
    ) -> Result<Response<pb::UpdateDeploymentRuleResponse>, Status> {
        let principal = caller(&request)?;
        let deployment_rule = self.update(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::UpdateDeploymentRuleResponse {
            deployment_rule: Some(deployment_rule),
        }))
    }

    async fn delete_deployment_rule(
        &self,
        request: Request<pb::DeleteDeploymentRuleRequest>,
    ) -> Result<Response<pb::DeleteDeploymentRuleResponse>, Status> {
        let principal = caller(&request)?;
        self.delete(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::DeleteDeploymentRuleResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> pb::DeploymentRule {
        pb::DeploymentRule {
            name: "nights".into(),
            enabled: true,
            timezone: "Europe/Paris".into(),
            weekdays: vec![pb::Weekday::Monday.into(), pb::Weekday::Friday.into()],
            start_at: Some(pb::TimeOfDay {
                hours: 8,
                minutes: 0,
            }),
            stop_at: Some(pb::TimeOfDay {
                hours: 19,
                minutes: 30,
            }),
            auto_stop: true,
            ..Default::default()
        }
    }

    fn fields(rule: &pb::DeploymentRule, environment_rule: bool) -> Vec<String> {
        let mut v = Violations::new();
        validate(rule, environment_rule, &mut v);
        match v.finish() {
            Ok(()) => Vec::new(),
            Err(ApiError::InvalidArgument(violations)) => {
                violations.into_iter().map(|v| v.field).collect()
            }
            Err(other) => vec![other.to_string()],
        }
    }

    #[test]
    fn one_violation_per_bad_field() {
        assert!(fields(&valid(), false).is_empty());
        let mut rule = valid();
        rule.name = "1st".into();
        rule.timezone = "Mars/Olympus".into();
        rule.weekdays = vec![1, 1, 0];
        rule.stop_at = Some(pb::TimeOfDay {
            hours: 24,
            minutes: 60,
        });
        rule.auto_delete = true;
        rule.environment_modes = vec![EnvironmentMode::Production.into(), 9];
        let mut got = fields(&rule, false);
        got.sort();
        assert_eq!(
            got,
            [
                "deployment_rule.auto_delete",
                "deployment_rule.environment_modes",
                "deployment_rule.name",
                "deployment_rule.start_at",
                "deployment_rule.stop_at",
                "deployment_rule.timezone",
                "deployment_rule.weekdays",
            ]
        );
    }

    #[test]
    fn modes_are_for_project_rules_and_default_to_non_production() {
        let mut rule = valid();
        rule.environment_modes = vec![EnvironmentMode::Staging.into()];
        assert_eq!(fields(&rule, true), ["deployment_rule.environment_modes"]);
        assert_eq!(covered_modes(&rule), [RbacMode::Staging]);
        rule.environment_modes.clear();
        assert_eq!(
            covered_modes(&rule),
            [RbacMode::Staging, RbacMode::Development, RbacMode::Preview]
        );
    }

    #[test]
    fn disabled_rules_have_no_next_times() {
        let now = Utc::now();
        let mut rule = valid();
        assert!(next_time(&rule, rule.stop_at.as_ref(), now).is_some());
        rule.enabled = false;
        let row = Row {
            kind: Kind::DeploymentRule,
            id: "r".into(),
            organization_id: "o".into(),
            parent_id: "p".into(),
            name: rule.name.clone(),
            subtype: PROJECT_RULE.into(),
            project_id: Some("p".into()),
            environment_id: None,
            service_id: None,
            cluster_id: None,
            spec: spec_of(&rule),
            sealed: None,
            lookup_hash: None,
            etag: "e".into(),
            create_time: now,
            update_time: now,
        };
        let shown = rule_of(&row, now).unwrap_or_default();
        assert_eq!(shown.next_start_time, None);
        assert_eq!(shown.next_stop_time, None);
        assert_eq!(
            shown.target,
            Some(pb::deployment_rule::Target::ProjectId("p".into()))
        );
    }
}
