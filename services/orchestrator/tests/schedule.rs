//! The deployment-rule scheduler on a clock the tests set: schedules in several time
//! zones and across daylight saving changes (pure), then rules from a real catalog
//! (identity and catalog in-process, real PostgreSQL and NATS JetStream) starting and
//! stopping environments through the deployments store, once per transition, after
//! downtime and with two replicas.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use common::{ControlPlane, cluster_row, create_project, org, with_token};
use slipway_orchestrator::schedule::{
    Fired, Schedule, ScheduleStore, Scheduler, TestClock, Transition, sync,
};
use slipway_orchestrator::store::{DeploymentRow, Phase, ServiceStateRow, Store};
use slipway_proto::catalog::v1 as cpb;
use slipway_proto::common::v1::{EnvironmentMode, ServiceKind};
use slipway_proto::deploy::v1 as pb;
use slipway_testkit::TestDatabase;
use tonic::transport::Channel;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

const WEEKDAYS: [cpb::Weekday; 5] = [
    cpb::Weekday::Monday,
    cpb::Weekday::Tuesday,
    cpb::Weekday::Wednesday,
    cpb::Weekday::Thursday,
    cpb::Weekday::Friday,
];

fn rule(
    timezone: &str,
    days: &[cpb::Weekday],
    start: (u32, u32),
    stop: (u32, u32),
) -> cpb::DeploymentRule {
    cpb::DeploymentRule {
        name: "office-hours".into(),
        enabled: true,
        timezone: timezone.into(),
        weekdays: days.iter().map(|d| *d as i32).collect(),
        start_at: Some(cpb::TimeOfDay {
            hours: start.0,
            minutes: start.1,
        }),
        stop_at: Some(cpb::TimeOfDay {
            hours: stop.0,
            minutes: stop.1,
        }),
        auto_stop: true,
        ..Default::default()
    }
}

fn latest(rule: &cpb::DeploymentRule, now: DateTime<Utc>) -> Option<(Transition, DateTime<Utc>)> {
    Schedule::from_rule(rule).unwrap().latest_transition(now)
}

#[test]
fn weekday_windows_in_several_time_zones() {
    let office = |tz: &str| rule(tz, &WEEKDAYS, (9, 0), (18, 0));
    // Monday 11 January 2027, 08:30 UTC.
    let monday = utc(2027, 1, 11, 8, 30);
    // Paris (UTC+1 in winter): 09:30, started at 08:00 UTC.
    assert_eq!(
        latest(&office("Europe/Paris"), monday),
        Some((Transition::Start, utc(2027, 1, 11, 8, 0)))
    );
    // New York (UTC-5): 03:30 Monday, still stopped since Friday 18:00 (23:00 UTC).
    assert_eq!(
        latest(&office("America/New_York"), monday),
        Some((Transition::Stop, utc(2027, 1, 8, 23, 0)))
    );
    // Kolkata (UTC+5:30): 14:00, started at 03:30 UTC.
    assert_eq!(
        latest(&office("Asia/Kolkata"), monday),
        Some((Transition::Start, utc(2027, 1, 11, 3, 30)))
    );
    // The edges: at the start minute it has started, a minute before it has not.
    assert_eq!(
        latest(&office("Europe/Paris"), utc(2027, 1, 11, 8, 0)),
        Some((Transition::Start, utc(2027, 1, 11, 8, 0)))
    );
    assert_eq!(
        latest(&office("Europe/Paris"), utc(2027, 1, 11, 7, 59)),
        Some((Transition::Stop, utc(2027, 1, 8, 17, 0)))
    );
    // The weekend belongs to Friday's stop.
    assert_eq!(
        latest(&office("Europe/Paris"), utc(2027, 1, 16, 12, 0)),
        Some((Transition::Stop, utc(2027, 1, 15, 17, 0)))
    );
    // A weekend-only rule is quiet on weekdays: its last act was Sunday's stop.
    let weekend = rule(
        "Europe/Paris",
        &[cpb::Weekday::Saturday, cpb::Weekday::Sunday],
        (10, 0),
        (16, 0),
    );
    assert_eq!(
        latest(&weekend, utc(2027, 1, 13, 12, 0)),
        Some((Transition::Stop, utc(2027, 1, 10, 15, 0)))
    );
    // Nothing before the rule's last update belongs to it.
    let mut fresh = office("Europe/Paris");
    fresh.update_time = Some(slipway_api::timestamp(utc(2027, 1, 11, 8, 15)));
    assert_eq!(latest(&fresh, monday), None);
    assert_eq!(
        latest(&fresh, utc(2027, 1, 11, 17, 0)),
        Some((Transition::Stop, utc(2027, 1, 11, 17, 0)))
    );
}

#[test]
fn daylight_saving_changes() {
    // Paris moves to summer time on Sunday 28 March 2027 (02:00 → 03:00) and back on
    // Sunday 31 October 2027 (03:00 → 02:00).
    let daily = rule(
        "Europe/Paris",
        &[
            cpb::Weekday::Monday,
            cpb::Weekday::Tuesday,
            cpb::Weekday::Wednesday,
            cpb::Weekday::Thursday,
            cpb::Weekday::Friday,
            cpb::Weekday::Saturday,
            cpb::Weekday::Sunday,
        ],
        (2, 30),
        (23, 0),
    );
    // 02:30 does not exist that night: the start acts at 03:00 summer time (01:00 UTC).
    assert_eq!(
        latest(&daily, utc(2027, 3, 28, 0, 59)),
        Some((Transition::Stop, utc(2027, 3, 27, 22, 0)))
    );
    assert_eq!(
        latest(&daily, utc(2027, 3, 28, 1, 0)),
        Some((Transition::Start, utc(2027, 3, 28, 1, 0)))
    );
    // The evening stop moves from 22:00 UTC to 21:00 UTC.
    assert_eq!(
        latest(&daily, utc(2027, 3, 28, 21, 30)),
        Some((Transition::Stop, utc(2027, 3, 28, 21, 0)))
    );
    // 02:30 happens twice on 31 October: the start acts once, at the first (00:30 UTC).
    assert_eq!(
        latest(&daily, utc(2027, 10, 31, 1, 45)),
        Some((Transition::Start, utc(2027, 10, 31, 0, 30)))
    );
    assert_eq!(
        latest(&daily, utc(2027, 10, 31, 0, 29)),
        Some((Transition::Stop, utc(2027, 10, 30, 21, 0)))
    );
    // Office hours follow local time across the change.
    let office = rule("Europe/Paris", &WEEKDAYS, (9, 0), (18, 0));
    assert_eq!(
        latest(&office, utc(2027, 3, 26, 12, 0)),
        Some((Transition::Start, utc(2027, 3, 26, 8, 0)))
    );
    assert_eq!(
        latest(&office, utc(2027, 3, 29, 12, 0)),
        Some((Transition::Start, utc(2027, 3, 29, 7, 0)))
    );
    // A zone with the opposite seasons: Sydney leaves summer time on 4 April 2027.
    let sydney = rule("Australia/Sydney", &WEEKDAYS, (9, 0), (18, 0));
    assert_eq!(
        latest(&sydney, utc(2027, 4, 1, 23, 0)),
        Some((Transition::Start, utc(2027, 4, 1, 22, 0)))
    );
    assert_eq!(
        latest(&sydney, utc(2027, 4, 5, 23, 30)),
        Some((Transition::Start, utc(2027, 4, 5, 23, 0)))
    );
}

struct Harness {
    control: Channel,
    admin: String,
    org: String,
    project: String,
    cluster: String,
    _follower: tokio::task::JoinHandle<()>,
    control_plane: ControlPlane,
}

impl Harness {
    async fn start() -> Self {
        let control_plane = ControlPlane::start("schedule-test").await;
        let identity = control_plane.identity();
        let (org, admin) = org(&identity, "org-a").await;
        let cluster = cluster_row(&control_plane.platform, &org, "c1").await;
        let control = control_plane.control.clone();
        let project = create_project(&control, &org, &admin, "shop").await.id;
        // The scheduler's copy of the rules follows catalog's announcements.
        let follower = tokio::spawn(sync::follow(
            Arc::clone(&control_plane.platform.bus),
            ScheduleStore::new(control_plane.platform.db.clone()),
            control_plane.catalog.clone(),
        ));
        Self {
            control,
            admin,
            org,
            project,
            cluster,
            _follower: follower,
            control_plane,
        }
    }

    fn scheduler(&self, clock: &TestClock) -> Scheduler {
        Scheduler::new(
            self.control_plane.platform.db.clone(),
            Arc::clone(&self.control_plane.platform.bus),
            self.control_plane.catalog.clone(),
            Arc::new(clock.clone()),
            None,
        )
    }

    fn store(&self) -> Store {
        Store::new(self.control_plane.platform.db.clone())
    }

    /// An environment of the project with one container service.
    async fn environment(&self, name: &str, mode: EnvironmentMode) -> String {
        let env =
            cpb::environment_service_client::EnvironmentServiceClient::new(self.control.clone())
                .create_environment(with_token(
                    cpb::CreateEnvironmentRequest {
                        project_id: self.project.clone(),
                        environment: Some(cpb::Environment {
                            name: name.into(),
                            mode: mode.into(),
                            cluster_id: self.cluster.clone(),
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    },
                    &self.admin,
                ))
                .await
                .unwrap()
                .into_inner()
                .environment
                .unwrap();
        cpb::service_service_client::ServiceServiceClient::new(self.control.clone())
            .create_service(with_token(
                cpb::CreateServiceRequest {
                    environment_id: env.id.clone(),
                    service: Some(cpb::Service {
                        name: "web".into(),
                        kind: ServiceKind::Container.into(),
                        settings: Some(cpb::service::Settings::Container(cpb::ContainerSettings {
                            source: Some(cpb::ImageSource {
                                image: "example/web".into(),
                                tag: "1".into(),
                                ..Default::default()
                            }),
                            runtime: Some(cpb::RuntimeSettings {
                                min_instances: 1,
                                max_instances: 1,
                                ..Default::default()
                            }),
                        })),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
                &self.admin,
            ))
            .await
            .unwrap();
        env.id
    }

    /// Creates a rule on the project (or on `environment`) and waits until the
    /// scheduler's copy has it.
    async fn create_rule(
        &self,
        environment: Option<&str>,
        rule: cpb::DeploymentRule,
    ) -> cpb::DeploymentRule {
        let target = match environment {
            Some(id) => cpb::create_deployment_rule_request::Target::EnvironmentId(id.into()),
            None => cpb::create_deployment_rule_request::Target::ProjectId(self.project.clone()),
        };
        let created = cpb::deployment_rule_service_client::DeploymentRuleServiceClient::new(
            self.control.clone(),
        )
        .create_deployment_rule(with_token(
            cpb::CreateDeploymentRuleRequest {
                target: Some(target),
                deployment_rule: Some(rule),
                request_id: String::new(),
            },
            &self.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .deployment_rule
        .unwrap();
        let copies = ScheduleStore::new(self.control_plane.platform.db.clone());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !copies
            .rules()
            .await
            .unwrap()
            .iter()
            .any(|r| r.id == created.id)
        {
            assert!(tokio::time::Instant::now() < deadline, "rule never synced");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        created
    }

    /// Records the environment's services as deployed, as the engine does when a deploy
    /// ends (a stop applies only to what was deployed).
    async fn mark_deployed(&self, environment_id: &str) {
        let snapshot = self
            .control_plane
            .catalog
            .environment_snapshot(cpb::GetEnvironmentSnapshotRequest {
                environment_id: environment_id.into(),
                service_ids: Vec::new(),
            })
            .await
            .unwrap()
            .snapshot
            .unwrap();
        for service in snapshot.services {
            let service = service.service.unwrap();
            self.store()
                .upsert_service_state(&ServiceStateRow {
                    environment_id: environment_id.into(),
                    service_id: service.id.clone(),
                    organization_id: self.org.clone(),
                    service_name: service.name.clone(),
                    service_kind: service.kind,
                    catalog_revision: "deployed".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }

    /// Every deployment of the environment, oldest first.
    async fn deployments(&self, environment_id: &str) -> Vec<DeploymentRow> {
        let mut rows = Vec::new();
        for phase in [Phase::Queued, Phase::Running, Phase::Done] {
            rows.extend(
                self.store()
                    .in_environment(environment_id, phase)
                    .await
                    .unwrap(),
            );
        }
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        rows
    }

    async fn actions(&self, environment_id: &str) -> Vec<pb::DeploymentAction> {
        self.deployments(environment_id)
            .await
            .iter()
            .map(|d| pb::DeploymentAction::try_from(d.action).unwrap())
            .collect()
    }
}

use pb::DeploymentAction::{Deploy, Stop};

// Far enough ahead that the rules, created now, already exist then.
#[tokio::test]
async fn a_project_rule_starts_and_stops_its_non_production_environments_once() {
    let h = Harness::start().await;
    let dev = h.environment("dev", EnvironmentMode::Development).await;
    let staging = h.environment("staging", EnvironmentMode::Staging).await;
    let prod = h.environment("prod", EnvironmentMode::Production).await;
    let own = h.environment("own", EnvironmentMode::Development).await;
    let project_rule = h
        .create_rule(None, rule("Europe/Paris", &WEEKDAYS, (9, 0), (18, 0)))
        .await;
    // `own` has its own rule, disabled: it opts out of the project's.
    let mut opt_out = rule("Europe/Paris", &WEEKDAYS, (9, 0), (18, 0));
    opt_out.name = "never".into();
    opt_out.enabled = false;
    h.create_rule(Some(&own), opt_out).await;
    for env in [&dev, &staging, &prod, &own] {
        h.mark_deployed(env).await;
    }

    // Monday 09:30 in Paris.
    let clock = TestClock::new(utc(2037, 1, 12, 8, 30));
    let scheduler = h.scheduler(&clock);
    let fired = scheduler.tick().await.unwrap();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].rule_id, project_rule.id);
    assert_eq!(fired[0].transition, Transition::Start);
    assert_eq!(fired[0].at, utc(2037, 1, 12, 8, 0));
    assert_eq!(fired[0].deployment_ids.len(), 2);
    assert_eq!(h.actions(&dev).await, vec![Deploy]);
    assert_eq!(h.actions(&staging).await, vec![Deploy]);
    assert!(h.actions(&prod).await.is_empty());
    assert!(h.actions(&own).await.is_empty());
    let started = &h.deployments(&dev).await[0];
    assert_eq!(
        started.trigger,
        pb::DeploymentTrigger::DeploymentRule as i32
    );
    assert_eq!(started.triggered_by, project_rule.id);
    assert_eq!(started.organization_id, h.org);

    // Later ticks in the same window fire nothing more.
    clock.advance(chrono::Duration::hours(2));
    assert!(scheduler.tick().await.unwrap().is_empty());
    assert_eq!(h.actions(&dev).await, vec![Deploy]);

    // 18:05 in Paris: stopped, production left running.
    clock.set(utc(2037, 1, 12, 17, 5));
    let fired = scheduler.tick().await.unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].transition, Transition::Stop);
    assert_eq!(h.actions(&dev).await, vec![Deploy, Stop]);
    assert_eq!(h.actions(&staging).await, vec![Deploy, Stop]);
    assert!(h.actions(&prod).await.is_empty());
    assert!(h.actions(&own).await.is_empty());
    assert!(scheduler.tick().await.unwrap().is_empty());
}

#[tokio::test]
async fn where_project_rules_overlap_the_highest_priority_acts() {
    let h = Harness::start().await;
    let staging = h.environment("staging", EnvironmentMode::Staging).await;
    let demo = h.environment("demo-1", EnvironmentMode::Development).await;
    for env in [&staging, &demo] {
        h.mark_deployed(env).await;
    }
    // Office hours for every environment; the demo ones stay up until 23:00.
    let office = h
        .create_rule(None, rule("Europe/Paris", &WEEKDAYS, (9, 0), (18, 0)))
        .await;
    let mut late = rule("Europe/Paris", &WEEKDAYS, (9, 0), (23, 0));
    late.name = "late-demos".into();
    late.environment_name_pattern = "demo-*".into();
    late.priority = 10;
    let late = h.create_rule(None, late).await;

    // Monday 09:30 in Paris: each environment started once, by the rule that acts on it.
    let clock = TestClock::new(utc(2037, 1, 12, 8, 30));
    let scheduler = h.scheduler(&clock);
    let fired = scheduler.tick().await.unwrap();
    let by_rule = |fired: &[Fired], id: &str| {
        fired
            .iter()
            .find(|f| f.rule_id == id)
            .map(|f| f.deployment_ids.len())
    };
    assert_eq!(by_rule(&fired, &office.id), Some(1), "{fired:?}");
    assert_eq!(by_rule(&fired, &late.id), Some(1), "{fired:?}");
    assert_eq!(h.actions(&staging).await, vec![Deploy]);
    assert_eq!(h.actions(&demo).await, vec![Deploy]);
    assert_eq!(h.deployments(&demo).await[0].triggered_by, late.id);

    // 18:05: office hours end for staging only.
    clock.set(utc(2037, 1, 12, 17, 5));
    scheduler.tick().await.unwrap();
    assert_eq!(h.actions(&staging).await, vec![Deploy, Stop]);
    assert_eq!(h.actions(&demo).await, vec![Deploy]);

    // 23:05: the demo environment stops with its own rule.
    clock.set(utc(2037, 1, 12, 22, 5));
    scheduler.tick().await.unwrap();
    assert_eq!(h.actions(&staging).await, vec![Deploy, Stop]);
    assert_eq!(h.actions(&demo).await, vec![Deploy, Stop]);
}

#[tokio::test]
async fn an_auto_delete_rule_deletes_its_environments_once() {
    let h = Harness::start().await;
    let preview = h.environment("pr-1", EnvironmentMode::Preview).await;
    let staging = h.environment("staging", EnvironmentMode::Staging).await;
    h.mark_deployed(&preview).await;
    h.mark_deployed(&staging).await;
    let mut nightly = rule("UTC", &WEEKDAYS, (0, 0), (2, 0));
    nightly.name = "nightly-cleanup".into();
    nightly.auto_stop = false;
    nightly.auto_delete = true;
    nightly.start_at = None;
    nightly.environment_modes = vec![EnvironmentMode::Preview.into()];
    let nightly = h.create_rule(None, nightly).await;

    // Monday 02:30: the preview is deleted from its cluster with the plan it had, and
    // from the catalog; staging is not the rule's.
    let clock = TestClock::new(utc(2037, 1, 12, 2, 30));
    let scheduler = h.scheduler(&clock);
    let fired = scheduler.tick().await.unwrap();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].rule_id, nightly.id);
    assert_eq!(fired[0].deployment_ids.len(), 1);
    let deleted = &h.deployments(&preview).await[0];
    assert_eq!(deleted.action, pb::DeploymentAction::Delete as i32);
    assert!(
        deleted.plan.is_some(),
        "the plan is frozen before the catalog forgets it"
    );
    let gone = h
        .control_plane
        .catalog
        .environment_snapshot(cpb::GetEnvironmentSnapshotRequest {
            environment_id: preview.clone(),
            service_ids: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.0.code(), tonic::Code::NotFound);
    assert!(h.actions(&staging).await.is_empty());

    // Another replica firing the same transition changes nothing.
    let other = h.scheduler(&clock);
    assert!(other.tick().await.unwrap().is_empty());
    assert_eq!(h.deployments(&preview).await.len(), 1);
    // An auto-delete rule never starts anything: Tuesday 01:00 fires nothing.
    clock.set(utc(2037, 1, 13, 1, 0));
    assert!(scheduler.tick().await.unwrap().is_empty());
}

#[tokio::test]
async fn after_downtime_only_the_latest_missed_transition_fires_once() {
    let h = Harness::start().await;
    let dev = h.environment("dev", EnvironmentMode::Development).await;
    h.mark_deployed(&dev).await;
    h.create_rule(
        Some(&dev),
        rule("America/New_York", &WEEKDAYS, (8, 0), (20, 0)),
    )
    .await;
    // Monday 10:00 in New York: started.
    let clock = TestClock::new(utc(2037, 1, 12, 15, 0));
    let scheduler = h.scheduler(&clock);
    assert_eq!(scheduler.tick().await.unwrap().len(), 1);
    assert_eq!(h.actions(&dev).await, vec![Deploy]);

    // No orchestrator runs until Wednesday 21:00 in New York: Monday's stop, Tuesday's
    // start and stop, Wednesday's start and stop were missed. Only the last one holds.
    clock.set(utc(2037, 1, 15, 2, 0));
    let fired = scheduler.tick().await.unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].transition, Transition::Stop);
    assert_eq!(fired[0].at, utc(2037, 1, 15, 1, 0));
    assert_eq!(h.actions(&dev).await, vec![Deploy, Stop]);
    assert!(scheduler.tick().await.unwrap().is_empty());

    // A restarted replica (a new scheduler on the same database) fires nothing again.
    let restarted = h.scheduler(&clock);
    assert!(restarted.tick().await.unwrap().is_empty());
    assert_eq!(h.actions(&dev).await, vec![Deploy, Stop]);

    // Down again over the weekend, back on Monday 12:00: Monday's start.
    clock.set(utc(2037, 1, 19, 17, 0));
    let fired = restarted.tick().await.unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].transition, Transition::Start);
    assert_eq!(fired[0].at, utc(2037, 1, 19, 13, 0));
    assert_eq!(h.actions(&dev).await, vec![Deploy, Stop, Deploy]);
}

#[tokio::test]
async fn two_replicas_fire_each_transition_once() {
    let h = Harness::start().await;
    let dev = h.environment("dev", EnvironmentMode::Development).await;
    let staging = h.environment("staging", EnvironmentMode::Staging).await;
    h.mark_deployed(&dev).await;
    h.mark_deployed(&staging).await;
    h.create_rule(None, rule("Asia/Tokyo", &WEEKDAYS, (9, 0), (18, 0)))
        .await;
    let clock = TestClock::new(utc(2037, 1, 12, 0, 30));
    let a = h.scheduler(&clock);
    let b = h.scheduler(&clock);
    let mut expected = Vec::new();
    // Monday to Friday, a tick of both replicas at once after each transition (Tokyo is
    // UTC+9: 00:00 and 09:00 UTC).
    for day in 12..=16 {
        for (hour, action) in [(0, Deploy), (9, Stop)] {
            clock.set(utc(2037, 1, day, hour, 30));
            let (fired_a, fired_b) = tokio::join!(a.tick(), b.tick());
            let queued: usize = fired_a
                .unwrap()
                .iter()
                .chain(fired_b.unwrap().iter())
                .map(|f| f.deployment_ids.len())
                .sum();
            assert_eq!(queued, 2, "day {day} {hour}:30");
            expected.push(action);
        }
    }
    assert_eq!(h.actions(&dev).await, expected);
    assert_eq!(h.actions(&staging).await, expected);
}

#[tokio::test]
async fn a_start_in_a_daylight_saving_gap_fires_after_the_gap() {
    let h = Harness::start().await;
    let dev = h.environment("dev", EnvironmentMode::Development).await;
    h.create_rule(
        Some(&dev),
        rule("Europe/Paris", &[cpb::Weekday::Sunday], (2, 30), (23, 0)),
    )
    .await;
    // 29 March 2037, 02:59 in Paris winter time: the start (02:30, which that night does
    // not exist) has not come yet.
    let clock = TestClock::new(utc(2037, 3, 29, 0, 59));
    let scheduler = h.scheduler(&clock);
    scheduler.tick().await.unwrap();
    assert!(h.actions(&dev).await.is_empty());
    // 03:00 summer time, 01:00 UTC: started.
    clock.set(utc(2037, 3, 29, 1, 0));
    let fired = scheduler.tick().await.unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].transition, Transition::Start);
    assert_eq!(fired[0].at, utc(2037, 3, 29, 1, 0));
    assert_eq!(h.actions(&dev).await, vec![Deploy]);
    // 23:00 summer time (21:00 UTC): the start is still queued (no engine runs here), and
    // what it will deploy is stopped after it.
    clock.set(utc(2037, 3, 29, 21, 0));
    let fired = scheduler.tick().await.unwrap();
    assert_eq!(fired[0].transition, Transition::Stop);
    assert_eq!(h.actions(&dev).await, vec![Deploy, Stop]);
}

#[tokio::test]
async fn fired_transitions_are_recorded_once_on_sqlite_too() {
    // The embedded single process runs on SQLite: the same conditional insert holds.
    let db = TestDatabase::sqlite().unwrap();
    let conn = slipway_db::connect(db.url(), 1, Duration::from_secs(15))
        .await
        .unwrap();
    slipway_db::migrate::<slipway_orchestrator::store::Migrator>(&conn)
        .await
        .unwrap();
    let store = ScheduleStore::new(conn);
    let at = utc(2037, 1, 12, 8, 0);
    assert!(!store.fired("r1", at, Transition::Start).await.unwrap());
    assert!(store.mark_fired("r1", at, Transition::Start).await.unwrap());
    assert!(!store.mark_fired("r1", at, Transition::Start).await.unwrap());
    assert!(store.fired("r1", at, Transition::Start).await.unwrap());
    assert!(!store.fired("r1", at, Transition::Stop).await.unwrap());
    assert!(!store.fired("r2", at, Transition::Start).await.unwrap());

    let mut copy = rule("Europe/Paris", &WEEKDAYS, (9, 0), (18, 0));
    copy.id = "r1".into();
    copy.target = Some(cpb::deployment_rule::Target::ProjectId("p".into()));
    store.upsert_rule(&copy).await.unwrap();
    copy.timezone = "Asia/Tokyo".into();
    store.upsert_rule(&copy).await.unwrap();
    assert_eq!(store.rules().await.unwrap(), vec![copy]);
    store.delete_rule("r1").await.unwrap();
    assert!(store.rules().await.unwrap().is_empty());
}
