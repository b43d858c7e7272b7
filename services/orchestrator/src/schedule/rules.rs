//! A deployment rule as the scheduler reads it, and the two calculations that matter: the
//! latest transition (start or stop) a rule has reached at a given instant, and which
//! project rule acts on an environment several cover.
//!
//! Only the latest transition is ever fired: after downtime, a stop that followed a
//! missed start is what should hold, so earlier missed transitions are superseded rather
//! than replayed.

use chrono::{
    DateTime, Datelike as _, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone as _, Utc,
    Weekday,
};
use chrono_tz::Tz;
use slipway_proto::catalog::v1 as cat;
use slipway_proto::common::v1::EnvironmentMode;

/// What a transition does to the environments a rule covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transition {
    /// Deploy with the current configuration.
    Start,
    /// Stop (never a production environment).
    Stop,
}

impl Transition {
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Start => "start",
            Transition::Stop => "stop",
        }
    }
}

/// A rule catalog accepted but the scheduler cannot read (catalog validates rules, so
/// this means the two disagree).
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("unknown time zone {0}")]
    Timezone(String),
    #[error("bad time of day {0}:{1}")]
    TimeOfDay(u32, u32),
    #[error("the rule has no stop time")]
    NoStop,
}

/// A deployment rule's schedule, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub timezone: Tz,
    pub weekdays: Vec<Weekday>,
    /// Local start time; `None` when the rule never starts environments.
    pub start: Option<NaiveTime>,
    pub stop: NaiveTime,
    /// Transitions before this instant are not the rule's (it did not exist, or said
    /// something else): the rule's last update.
    pub since: DateTime<Utc>,
}

fn weekday(value: i32) -> Option<Weekday> {
    match cat::Weekday::try_from(value).ok()? {
        cat::Weekday::Monday => Some(Weekday::Mon),
        cat::Weekday::Tuesday => Some(Weekday::Tue),
        cat::Weekday::Wednesday => Some(Weekday::Wed),
        cat::Weekday::Thursday => Some(Weekday::Thu),
        cat::Weekday::Friday => Some(Weekday::Fri),
        cat::Weekday::Saturday => Some(Weekday::Sat),
        cat::Weekday::Sunday => Some(Weekday::Sun),
        cat::Weekday::Unspecified => None,
    }
}

fn time_of_day(t: &cat::TimeOfDay) -> Result<NaiveTime, RuleError> {
    NaiveTime::from_hms_opt(t.hours, t.minutes, 0).ok_or(RuleError::TimeOfDay(t.hours, t.minutes))
}

impl Schedule {
    /// The schedule of `rule`. A start time counts only with `auto_stop` (the proto's
    /// contract: starting is part of auto-stop).
    pub fn from_rule(rule: &cat::DeploymentRule) -> Result<Self, RuleError> {
        let timezone: Tz = rule
            .timezone
            .parse()
            .map_err(|_| RuleError::Timezone(rule.timezone.clone()))?;
        let stop = time_of_day(rule.stop_at.as_ref().ok_or(RuleError::NoStop)?)?;
        let start = match (&rule.start_at, rule.auto_stop) {
            (Some(start), true) => Some(time_of_day(start)?),
            _ => None,
        };
        let since = rule
            .update_time
            .as_ref()
            .and_then(|t| DateTime::from_timestamp(t.seconds, 0))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        Ok(Self {
            timezone,
            weekdays: rule.weekdays.iter().filter_map(|d| weekday(*d)).collect(),
            start,
            stop,
            since,
        })
    }

    /// The latest transition at or before `now` (and not before `since`), looking back one
    /// week; a start and a stop at the same instant resolve to the stop.
    pub fn latest_transition(&self, now: DateTime<Utc>) -> Option<(Transition, DateTime<Utc>)> {
        let today = now.with_timezone(&self.timezone).date_naive();
        let mut best: Option<(Transition, DateTime<Utc>)> = None;
        for back in 0..=7 {
            let date = today - Duration::days(back);
            if !self.weekdays.contains(&date.weekday()) {
                continue;
            }
            let candidates = [
                self.start.map(|t| (Transition::Start, t)),
                Some((Transition::Stop, self.stop)),
            ];
            for (kind, time) in candidates.into_iter().flatten() {
                let at = local_instant(self.timezone, date, time);
                if at > now || at < self.since {
                    continue;
                }
                let better = match best {
                    None => true,
                    Some((best_kind, best_at)) => {
                        at > best_at
                            || (at == best_at
                                && kind == Transition::Stop
                                && best_kind == Transition::Start)
                    }
                };
                if better {
                    best = Some((kind, at));
                }
            }
        }
        best
    }
}

/// The instant of local `time` on `date` in `zone`. A local time skipped by a daylight
/// saving change acts at the first minute after the gap; a repeated one acts once, at
/// its first occurrence.
pub fn local_instant(zone: Tz, date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let mut local = date.and_time(time);
    // Gaps are at most a few hours; a day of minutes bounds the search whatever happens.
    for _ in 0..=(24 * 60) {
        match zone.from_local_datetime(&local) {
            LocalResult::Single(at) => return at.with_timezone(&Utc),
            LocalResult::Ambiguous(first, _) => return first.with_timezone(&Utc),
            LocalResult::None => local += Duration::minutes(1),
        }
    }
    // Unreachable for real zones; reading the time as UTC keeps the rule running.
    local.and_utc()
}

/// Whether a project rule covers `environment`: one of its modes (every mode but
/// production when it names none) and its name pattern. Never a production environment.
pub fn covers(rule: &cat::DeploymentRule, environment: &cat::Environment) -> bool {
    environment.mode != EnvironmentMode::Production as i32
        && (rule.environment_modes.is_empty() || rule.environment_modes.contains(&environment.mode))
        && slipway_api::glob::matches(&rule.environment_name_pattern, &environment.name)
}

/// The rule of `project` that acts on `environment`: among its enabled rules that cover
/// it, the highest priority. Catalog refuses two rules of equal priority that could cover
/// one environment; between equals stored before that, the oldest (ids are time-ordered)
/// acts, so every replica picks the same one.
pub fn acting_project_rule<'a>(
    rules: &'a [cat::DeploymentRule],
    project: &str,
    environment: &cat::Environment,
) -> Option<&'a cat::DeploymentRule> {
    rules
        .iter()
        .filter(|rule| {
            rule.enabled
                && matches!(
                    &rule.target,
                    Some(cat::deployment_rule::Target::ProjectId(id)) if id == project
                )
                && covers(rule, environment)
        })
        .max_by(|a, b| a.priority.cmp(&b.priority).then_with(|| b.id.cmp(&a.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, project: &str, pattern: &str, priority: i32) -> cat::DeploymentRule {
        cat::DeploymentRule {
            id: id.into(),
            target: Some(cat::deployment_rule::Target::ProjectId(project.into())),
            enabled: true,
            environment_name_pattern: pattern.into(),
            priority,
            ..Default::default()
        }
    }

    fn environment(name: &str, mode: EnvironmentMode) -> cat::Environment {
        cat::Environment {
            name: name.into(),
            mode: mode.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_highest_priority_covering_rule_acts() {
        let rules = vec![
            rule("01-office", "p", "", 0),
            rule("02-demos", "p", "pr-*", 10),
            rule("03-other-project", "q", "", 100),
        ];
        let acting = |name: &str, mode| {
            acting_project_rule(&rules, "p", &environment(name, mode)).map(|r| r.id.as_str())
        };
        assert_eq!(acting("pr-7", EnvironmentMode::Preview), Some("02-demos"));
        assert_eq!(
            acting("staging", EnvironmentMode::Staging),
            Some("01-office")
        );
        assert_eq!(acting("prod", EnvironmentMode::Production), None);

        let mut disabled = rules.clone();
        disabled[1].enabled = false;
        assert_eq!(
            acting_project_rule(
                &disabled,
                "p",
                &environment("pr-7", EnvironmentMode::Preview)
            )
            .map(|r| r.id.as_str()),
            Some("01-office")
        );
    }

    #[test]
    fn modes_and_pattern_both_must_cover() {
        let mut staging_only = rule("r", "p", "web-*", 0);
        staging_only.environment_modes = vec![EnvironmentMode::Staging.into()];
        assert!(covers(
            &staging_only,
            &environment("web-1", EnvironmentMode::Staging)
        ));
        assert!(!covers(
            &staging_only,
            &environment("web-1", EnvironmentMode::Development)
        ));
        assert!(!covers(
            &staging_only,
            &environment("api-1", EnvironmentMode::Staging)
        ));
    }

    #[test]
    fn equal_priorities_fall_to_the_oldest_rule() {
        let rules = vec![rule("02-b", "p", "", 5), rule("01-a", "p", "*", 5)];
        let acting = acting_project_rule(&rules, "p", &environment("x", EnvironmentMode::Staging));
        assert_eq!(acting.map(|r| r.id.as_str()), Some("01-a"));
    }
}
