//! DeploymentRuleService over gRPC, authenticated through identity, on real PostgreSQL and
//! NATS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{DateTime, Datelike as _, Duration, TimeZone as _, Utc};
use common::{Harness, TestResult, violations, with_token};
use slipway_identity::store::BuiltinRole;
use slipway_proto::catalog::v1 as pb;
use slipway_proto::catalog::v1::deployment_rule_service_client::DeploymentRuleServiceClient;
use slipway_proto::common::v1::EnvironmentMode;
use tonic::Code;
use tonic::transport::Channel;

fn rules(h: &Harness) -> DeploymentRuleServiceClient<Channel> {
    DeploymentRuleServiceClient::new(h.channel.clone())
}

/// A valid auto-stop rule: start 08:00, stop 19:30, Monday to Friday, in Paris.
fn rule(name: &str) -> pb::DeploymentRule {
    pb::DeploymentRule {
        name: name.into(),
        enabled: true,
        timezone: "Europe/Paris".into(),
        weekdays: [
            pb::Weekday::Monday,
            pb::Weekday::Tuesday,
            pb::Weekday::Wednesday,
            pb::Weekday::Thursday,
            pb::Weekday::Friday,
        ]
        .into_iter()
        .map(Into::into)
        .collect(),
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

fn on_project(
    project: &str,
    rule: pb::DeploymentRule,
    request_id: &str,
) -> pb::CreateDeploymentRuleRequest {
    pb::CreateDeploymentRuleRequest {
        target: Some(pb::create_deployment_rule_request::Target::ProjectId(
            project.into(),
        )),
        deployment_rule: Some(rule),
        request_id: request_id.into(),
    }
}

fn on_environment(environment: &str, rule: pb::DeploymentRule) -> pb::CreateDeploymentRuleRequest {
    pb::CreateDeploymentRuleRequest {
        target: Some(pb::create_deployment_rule_request::Target::EnvironmentId(
            environment.into(),
        )),
        deployment_rule: Some(rule),
        request_id: String::new(),
    }
}

fn list_project(project: &str, page_size: i32, page_token: &str) -> pb::ListDeploymentRulesRequest {
    pb::ListDeploymentRulesRequest {
        target: Some(pb::list_deployment_rules_request::Target::ProjectId(
            project.into(),
        )),
        page_size,
        page_token: page_token.into(),
    }
}

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

fn time(timestamp: &prost_types::Timestamp) -> DateTime<Utc> {
    Utc.timestamp_opt(timestamp.seconds, 0).unwrap()
}

/// The first `hours:minutes` on a weekday (Monday to Friday) in `tz` strictly after `now`,
/// computed independently of the service with chrono-tz.
fn expected_next(now: DateTime<Utc>, tz: chrono_tz::Tz, hours: u32, minutes: u32) -> DateTime<Utc> {
    let local_today = now.with_timezone(&tz).date_naive();
    (0..10)
        .filter_map(|offset| {
            let date = local_today + Duration::days(offset);
            if date.weekday().number_from_monday() > 5 {
                return None;
            }
            let at = date.and_hms_opt(hours, minutes, 0)?;
            tz.from_local_datetime(&at).earliest()
        })
        .map(|at| at.with_timezone(&Utc))
        .find(|at| *at > now)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_and_environment_rules_crud() -> TestResult {
    let h = Harness::start().await?;
    let project = h.project(&h.a, "shop").await?;
    let cluster = h.cluster(&h.a, "main").await?;
    let dev = h
        .environment(
            &h.a,
            &project,
            "dev",
            EnvironmentMode::Development,
            &cluster,
        )
        .await?;
    let mut events = h
        .platform
        .bus
        .subscribe("slipway.events.catalog.deployment_rule.>")
        .await?;
    let mut client = rules(&h);

    // A project rule covering staging, with a request id.
    let mut staging_rule = rule("office-hours");
    staging_rule.environment_modes = vec![EnvironmentMode::Staging.into()];
    let before = Utc::now();
    let created = client
        .create_deployment_rule(with_token(
            on_project(&project.id, staging_rule.clone(), "r1"),
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .deployment_rule
        .unwrap();
    let after = Utc::now();
    assert_eq!(created.organization_id, h.a.id);
    assert_eq!(
        created.target,
        Some(pb::deployment_rule::Target::ProjectId(project.id.clone()))
    );
    assert!(!created.id.is_empty() && !created.etag.is_empty());
    assert_eq!(created.environment_modes, staging_rule.environment_modes);

    // Next start and stop, in Paris, computed here with chrono-tz.
    let paris = chrono_tz::Europe::Paris;
    let start = time(created.next_start_time.as_ref().unwrap());
    let stop = time(created.next_stop_time.as_ref().unwrap());
    assert!(
        start == expected_next(before, paris, 8, 0) || start == expected_next(after, paris, 8, 0),
        "start {start}"
    );
    assert!(
        stop == expected_next(before, paris, 19, 30) || stop == expected_next(after, paris, 19, 30),
        "stop {stop}"
    );

    // The event.
    let message = tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
        .await?
        .unwrap();
    assert_eq!(
        message.subject,
        "slipway.events.catalog.deployment_rule.created"
    );
    let event = <slipway_proto::events::v1::Event as prost::Message>::decode(message.payload)?;
    match event.payload {
        Some(slipway_proto::events::v1::event::Payload::DeploymentRuleChanged(changed)) => {
            assert_eq!(changed.deployment_rule_id, created.id);
            assert_eq!(changed.project_id, project.id);
            assert!(!changed.deleted);
        }
        other => panic!("unexpected payload {other:?}"),
    }

    // A repeated request id returns the first result and creates nothing, even though
    // the rule would now conflict with itself.
    let again = client
        .create_deployment_rule(with_token(
            on_project(&project.id, staging_rule.clone(), "r1"),
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .deployment_rule
        .unwrap();
    assert_eq!(again.id, created.id);
    assert_eq!(again.etag, created.etag);

    // Same mode under another name (and no request id): refused.
    let mut overlapping = rule("other");
    overlapping.environment_modes = vec![
        EnvironmentMode::Preview.into(),
        EnvironmentMode::Staging.into(),
    ];
    let overlap = client
        .create_deployment_rule(with_token(
            on_project(&project.id, overlapping, ""),
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(overlap.code(), Code::AlreadyExists);
    // Same name: refused.
    let mut same_name = rule("office-hours");
    same_name.environment_modes = vec![EnvironmentMode::Development.into()];
    let taken = client
        .create_deployment_rule(with_token(
            on_project(&project.id, same_name, ""),
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);

    // Get, list.
    let got = client
        .get_deployment_rule(with_token(
            pb::GetDeploymentRuleRequest {
                id: created.id.clone(),
            },
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .deployment_rule
        .unwrap();
    assert_eq!(got.name, "office-hours");
    assert_eq!(got.etag, created.etag);
    let listed = client
        .list_deployment_rules(with_token(list_project(&project.id, 0, ""), &h.a.admin))
        .await?
        .into_inner();
    assert_eq!(listed.deployment_rules.len(), 1);
    assert!(listed.next_page_token.is_empty());

    // Update: disable it (next times unset), then a stale etag is refused.
    let updated = client
        .update_deployment_rule(with_token(
            pb::UpdateDeploymentRuleRequest {
                deployment_rule: Some(pb::DeploymentRule {
                    id: created.id.clone(),
                    enabled: false,
                    etag: created.etag.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["enabled"]),
            },
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .deployment_rule
        .unwrap();
    assert!(!updated.enabled);
    assert_eq!(updated.name, "office-hours");
    assert_eq!(updated.next_start_time, None);
    assert_eq!(updated.next_stop_time, None);
    assert_ne!(updated.etag, created.etag);
    let stale = client
        .update_deployment_rule(with_token(
            pb::UpdateDeploymentRuleRequest {
                deployment_rule: Some(pb::DeploymentRule {
                    id: created.id.clone(),
                    enabled: true,
                    etag: created.etag.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["enabled"]),
            },
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    // Switching to auto_delete needs start_at cleared too: left inconsistent, refused.
    let inconsistent = client
        .update_deployment_rule(with_token(
            pb::UpdateDeploymentRuleRequest {
                deployment_rule: Some(pb::DeploymentRule {
                    id: created.id.clone(),
                    auto_stop: false,
                    auto_delete: true,
                    ..Default::default()
                }),
                update_mask: mask(&["auto_stop", "auto_delete"]),
            },
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(inconsistent.code(), Code::InvalidArgument);
    assert_eq!(violations(&inconsistent), ["deployment_rule.start_at"]);
    let to_delete = client
        .update_deployment_rule(with_token(
            pb::UpdateDeploymentRuleRequest {
                deployment_rule: Some(pb::DeploymentRule {
                    id: created.id.clone(),
                    auto_stop: false,
                    auto_delete: true,
                    enabled: true,
                    ..Default::default()
                }),
                update_mask: mask(&["auto_stop", "auto_delete", "start_at", "enabled"]),
            },
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .deployment_rule
        .unwrap();
    assert!(to_delete.auto_delete && to_delete.start_at.is_none());
    assert_eq!(to_delete.next_start_time, None, "auto_delete never starts");
    assert!(to_delete.next_stop_time.is_some());

    // An environment rule; one per environment.
    let mut env_rule = rule("dev-hours");
    env_rule.enabled = false;
    let on_dev = client
        .create_deployment_rule(with_token(on_environment(&dev.id, env_rule), &h.a.admin))
        .await?
        .into_inner()
        .deployment_rule
        .unwrap();
    assert_eq!(
        on_dev.target,
        Some(pb::deployment_rule::Target::EnvironmentId(dev.id.clone()))
    );
    assert_eq!(on_dev.next_stop_time, None, "disabled");
    let second = client
        .create_deployment_rule(with_token(
            on_environment(&dev.id, rule("another")),
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(second.code(), Code::AlreadyExists);
    let env_listed = client
        .list_deployment_rules(with_token(
            pb::ListDeploymentRulesRequest {
                target: Some(pb::list_deployment_rules_request::Target::EnvironmentId(
                    dev.id.clone(),
                )),
                ..Default::default()
            },
            &h.a.admin,
        ))
        .await?
        .into_inner();
    assert_eq!(env_listed.deployment_rules, vec![on_dev.clone()]);
    // Project listings hold project rules only.
    let listed = client
        .list_deployment_rules(with_token(list_project(&project.id, 0, ""), &h.a.admin))
        .await?
        .into_inner();
    assert_eq!(
        listed
            .deployment_rules
            .iter()
            .map(|r| r.id.clone())
            .collect::<Vec<_>>(),
        vec![created.id.clone()]
    );
    let renamed = client
        .update_deployment_rule(with_token(
            pb::UpdateDeploymentRuleRequest {
                deployment_rule: Some(pb::DeploymentRule {
                    id: on_dev.id.clone(),
                    name: "dev-nights".into(),
                    timezone: "America/New_York".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["name", "timezone"]),
            },
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .deployment_rule
        .unwrap();
    assert_eq!(renamed.name, "dev-nights");
    assert_eq!(renamed.timezone, "America/New_York");

    // A rule on a production environment is refused.
    let prod = h
        .environment(
            &h.a,
            &project,
            "prod",
            EnvironmentMode::Production,
            &cluster,
        )
        .await?;
    let on_prod = client
        .create_deployment_rule(with_token(
            on_environment(&prod.id, rule("never")),
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(on_prod.code(), Code::FailedPrecondition);

    // Delete, with a stale etag first.
    let stale_delete = client
        .delete_deployment_rule(with_token(
            pb::DeleteDeploymentRuleRequest {
                id: on_dev.id.clone(),
                etag: on_dev.etag.clone(),
            },
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(stale_delete.code(), Code::FailedPrecondition);
    client
        .delete_deployment_rule(with_token(
            pb::DeleteDeploymentRuleRequest {
                id: on_dev.id.clone(),
                etag: renamed.etag.clone(),
            },
            &h.a.admin,
        ))
        .await?;
    let gone = client
        .get_deployment_rule(with_token(
            pb::GetDeploymentRuleRequest {
                id: on_dev.id.clone(),
            },
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    // The events that followed (failed calls and the replayed create publish nothing):
    // updated twice, created, updated, and deleted with its flag.
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
            .await?
            .unwrap();
        let event = <slipway_proto::events::v1::Event as prost::Message>::decode(message.payload)?;
        let Some(slipway_proto::events::v1::event::Payload::DeploymentRuleChanged(changed)) =
            event.payload
        else {
            panic!("unexpected payload");
        };
        seen.push((event.r#type, changed.deployment_rule_id, changed.deleted));
    }
    assert_eq!(
        seen.last().unwrap(),
        &(
            "catalog.deployment_rule.deleted".to_owned(),
            on_dev.id.clone(),
            true
        )
    );
    let types: Vec<&str> = seen.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "catalog.deployment_rule.updated",
            "catalog.deployment_rule.updated",
            "catalog.deployment_rule.created",
            "catalog.deployment_rule.updated",
            "catalog.deployment_rule.deleted",
        ]
    );
    assert!(seen[..4].iter().all(|(_, _, deleted)| !deleted));
    h.stop().await
}

/// Project rules may cover the same environments (by modes and name pattern) only at
/// different priorities: which one acts is never a coin toss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_project_rules_need_different_priorities() -> TestResult {
    let h = Harness::start().await?;
    let project = h.project(&h.a, "shop").await?;
    let mut client = rules(&h);
    let mut office = rule("office-hours");
    office.environment_modes = vec![EnvironmentMode::Staging.into()];
    client
        .create_deployment_rule(with_token(on_project(&project.id, office, ""), &h.a.admin))
        .await?;
    // Every staging environment named demo-*, also covered by office-hours: a higher
    // priority is taken.
    let mut late_demos = rule("late-demos");
    late_demos.environment_modes = vec![EnvironmentMode::Staging.into()];
    late_demos.environment_name_pattern = "demo-*".into();
    late_demos.priority = 10;
    let demos = client
        .create_deployment_rule(with_token(
            on_project(&project.id, late_demos.clone(), ""),
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .deployment_rule
        .unwrap();
    assert_eq!(demos.environment_name_pattern, "demo-*");
    assert_eq!(demos.priority, 10);
    // At that priority, a pattern sharing a name with it is refused, a disjoint one taken.
    let mut shared = late_demos.clone();
    shared.name = "demo-one".into();
    shared.environment_name_pattern = "demo-1".into();
    let refused = client
        .create_deployment_rule(with_token(on_project(&project.id, shared, ""), &h.a.admin))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists);
    let mut disjoint = late_demos;
    disjoint.name = "qa-nights".into();
    disjoint.environment_name_pattern = "qa".into();
    let qa = client
        .create_deployment_rule(with_token(
            on_project(&project.id, disjoint, ""),
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .deployment_rule
        .unwrap();
    // An update into a clash is refused too; out of it, taken.
    let clash = client
        .update_deployment_rule(with_token(
            pb::UpdateDeploymentRuleRequest {
                deployment_rule: Some(pb::DeploymentRule {
                    id: qa.id.clone(),
                    environment_name_pattern: "demo-?".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["environment_name_pattern"]),
            },
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(clash.code(), Code::AlreadyExists);
    let moved = client
        .update_deployment_rule(with_token(
            pb::UpdateDeploymentRuleRequest {
                deployment_rule: Some(pb::DeploymentRule {
                    id: qa.id.clone(),
                    environment_name_pattern: "demo-?".into(),
                    priority: 20,
                    ..Default::default()
                }),
                update_mask: mask(&["environment_name_pattern", "priority"]),
            },
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .deployment_rule
        .unwrap();
    assert_eq!(
        (moved.environment_name_pattern.as_str(), moved.priority),
        ("demo-?", 20)
    );
    for id in [&demos.id, &qa.id] {
        client
            .delete_deployment_rule(with_token(
                pb::DeleteDeploymentRuleRequest {
                    id: id.clone(),
                    etag: String::new(),
                },
                &h.a.admin,
            ))
            .await?;
    }
    let listed = client
        .list_deployment_rules(with_token(list_project(&project.id, 0, ""), &h.a.admin))
        .await?
        .into_inner();
    assert_eq!(listed.deployment_rules.len(), 1);
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_field_is_named_and_nothing_is_written() -> TestResult {
    let h = Harness::start().await?;
    let project = h.project(&h.a, "shop").await?;
    let cluster = h.cluster(&h.a, "main").await?;
    let dev = h
        .environment(
            &h.a,
            &project,
            "dev",
            EnvironmentMode::Development,
            &cluster,
        )
        .await?;
    let mut client = rules(&h);
    type Change = fn(&mut pb::DeploymentRule);
    let cases: Vec<(&str, Change)> = vec![
        ("deployment_rule.name", |r| r.name = String::new()),
        ("deployment_rule.name", |r| r.name = "Bad_Name".into()),
        ("deployment_rule.name", |r| r.name = "1st".into()),
        ("deployment_rule.timezone", |r| {
            r.timezone = "Mars/Olympus".into()
        }),
        ("deployment_rule.timezone", |r| r.timezone = "+02:00".into()),
        ("deployment_rule.timezone", |r| r.timezone = String::new()),
        ("deployment_rule.weekdays", |r| r.weekdays.clear()),
        ("deployment_rule.weekdays", |r| {
            r.weekdays = vec![pb::Weekday::Monday.into(), pb::Weekday::Monday.into()];
        }),
        ("deployment_rule.weekdays", |r| {
            r.weekdays = vec![pb::Weekday::Unspecified.into()];
        }),
        ("deployment_rule.start_at", |r| {
            r.start_at = Some(pb::TimeOfDay {
                hours: 24,
                minutes: 0,
            });
        }),
        ("deployment_rule.stop_at", |r| {
            r.stop_at = Some(pb::TimeOfDay {
                hours: 7,
                minutes: 60,
            });
        }),
        ("deployment_rule.stop_at", |r| r.stop_at = None),
        ("deployment_rule.auto_stop", |r| r.auto_stop = false),
        ("deployment_rule.auto_delete", |r| {
            r.auto_delete = true;
            r.start_at = None;
        }),
        ("deployment_rule.start_at", |r| {
            r.auto_stop = false;
            r.auto_delete = true;
        }),
        ("deployment_rule.environment_modes", |r| {
            r.environment_modes = vec![EnvironmentMode::Production.into()];
        }),
        ("deployment_rule.environment_modes", |r| {
            r.environment_modes = vec![EnvironmentMode::Unspecified.into()];
        }),
        ("deployment_rule.environment_modes", |r| {
            r.environment_modes = vec![
                EnvironmentMode::Staging.into(),
                EnvironmentMode::Staging.into(),
            ];
        }),
        ("deployment_rule.environment_name_pattern", |r| {
            r.environment_name_pattern = "PR-*".into();
        }),
        ("deployment_rule.environment_name_pattern", |r| {
            r.environment_name_pattern = "x".repeat(64);
        }),
        ("deployment_rule.priority", |r| r.priority = -1),
        ("deployment_rule.priority", |r| r.priority = 1001),
    ];
    for (i, (field, change)) in cases.into_iter().enumerate() {
        let mut bad = rule("nights");
        change(&mut bad);
        let status = client
            .create_deployment_rule(with_token(
                on_project(&project.id, bad, &format!("bad-{i}")),
                &h.a.admin,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "case {i}");
        assert_eq!(violations(&status), [field], "case {i}");
    }
    // Several bad fields: one violation each.
    let mut bad = rule("Bad");
    bad.timezone = "Nowhere".into();
    bad.weekdays.clear();
    let status = client
        .create_deployment_rule(with_token(on_project(&project.id, bad, ""), &h.a.admin))
        .await
        .unwrap_err();
    let mut fields = violations(&status);
    fields.sort();
    assert_eq!(
        fields,
        [
            "deployment_rule.name",
            "deployment_rule.timezone",
            "deployment_rule.weekdays"
        ]
    );
    // Modes, a pattern or a priority on an environment rule.
    let mut bad = rule("nights");
    bad.environment_modes = vec![EnvironmentMode::Development.into()];
    bad.environment_name_pattern = "dev".into();
    bad.priority = 3;
    let status = client
        .create_deployment_rule(with_token(on_environment(&dev.id, bad), &h.a.admin))
        .await
        .unwrap_err();
    let mut fields = violations(&status);
    fields.sort();
    assert_eq!(
        fields,
        [
            "deployment_rule.environment_modes",
            "deployment_rule.environment_name_pattern",
            "deployment_rule.priority"
        ]
    );
    // No target.
    let status = client
        .create_deployment_rule(with_token(
            pb::CreateDeploymentRuleRequest {
                target: None,
                deployment_rule: Some(rule("nights")),
                request_id: String::new(),
            },
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violations(&status), ["project_id"]);
    // Update paths are checked too, and an unknown path is refused.
    let good = client
        .create_deployment_rule(with_token(
            on_project(&project.id, rule("nights"), ""),
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .deployment_rule
        .unwrap();
    for (paths, field) in [
        (&["timezone"][..], "deployment_rule.timezone"),
        (&["weekdays"][..], "deployment_rule.weekdays"),
        (&["stop_at"][..], "deployment_rule.stop_at"),
        (&["next_stop_time"][..], "update_mask.paths[0]"),
    ] {
        let status = client
            .update_deployment_rule(with_token(
                pb::UpdateDeploymentRuleRequest {
                    deployment_rule: Some(pb::DeploymentRule {
                        id: good.id.clone(),
                        timezone: "Mars/Olympus".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(paths),
                },
                &h.a.admin,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{paths:?}");
        assert_eq!(violations(&status), [field], "{paths:?}");
    }

    // Nothing was written: one rule on the project, none on the environment, and the
    // valid rule unchanged.
    let listed = client
        .list_deployment_rules(with_token(list_project(&project.id, 0, ""), &h.a.admin))
        .await?
        .into_inner();
    assert_eq!(listed.deployment_rules.len(), 1);
    assert_eq!(listed.deployment_rules[0].etag, good.etag);
    let on_env = client
        .list_deployment_rules(with_token(
            pb::ListDeploymentRulesRequest {
                target: Some(pb::list_deployment_rules_request::Target::EnvironmentId(
                    dev.id.clone(),
                )),
                ..Default::default()
            },
            &h.a.admin,
        ))
        .await?
        .into_inner();
    assert!(on_env.deployment_rules.is_empty());
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_walks_every_rule_once() -> TestResult {
    let h = Harness::start().await?;
    let project = h.project(&h.a, "shop").await?;
    let mut client = rules(&h);
    // Mode overlap limits a project to three covering rules; one mode each.
    let modes = [
        EnvironmentMode::Staging,
        EnvironmentMode::Development,
        EnvironmentMode::Preview,
    ];
    let mut ids = Vec::new();
    for (i, mode) in modes.into_iter().enumerate() {
        let mut r = rule(&format!("rule-{i}"));
        r.environment_modes = vec![mode.into()];
        let created = client
            .create_deployment_rule(with_token(on_project(&project.id, r, ""), &h.a.admin))
            .await?
            .into_inner()
            .deployment_rule
            .unwrap();
        ids.push(created.id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_deployment_rules(with_token(list_project(&project.id, 2, &token), &h.a.admin))
            .await?
            .into_inner();
        pages += 1;
        assert!(page.deployment_rules.len() <= 2);
        seen.extend(page.deployment_rules.into_iter().map(|r| r.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 2);
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
    // A token of another listing, and a negative size, are refused.
    let other = h.project(&h.a, "other").await?;
    let first = client
        .list_deployment_rules(with_token(list_project(&project.id, 1, ""), &h.a.admin))
        .await?
        .into_inner();
    let wrong = client
        .list_deployment_rules(with_token(
            list_project(&other.id, 1, &first.next_page_token),
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&wrong), ["page_token"]);
    let negative = client
        .list_deployment_rules(with_token(list_project(&project.id, -1, ""), &h.a.admin))
        .await
        .unwrap_err();
    assert_eq!(negative.code(), Code::InvalidArgument);
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_get_not_found_and_viewers_only_read() -> TestResult {
    let h = Harness::start().await?;
    let project = h.project(&h.a, "shop").await?;
    let cluster = h.cluster(&h.a, "main").await?;
    let dev = h
        .environment(
            &h.a,
            &project,
            "dev",
            EnvironmentMode::Development,
            &cluster,
        )
        .await?;
    let mut client = rules(&h);
    let project_rule = client
        .create_deployment_rule(with_token(
            on_project(&project.id, rule("nights"), ""),
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .deployment_rule
        .unwrap();
    let mut env_rule_input = rule("dev-nights");
    env_rule_input.environment_modes.clear();
    let env_rule = client
        .create_deployment_rule(with_token(
            on_environment(&dev.id, env_rule_input),
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .deployment_rule
        .unwrap();

    let intruder = &h.b.admin;
    for id in [&project_rule.id, &env_rule.id] {
        let get = client
            .get_deployment_rule(with_token(
                pb::GetDeploymentRuleRequest { id: id.clone() },
                intruder,
            ))
            .await
            .unwrap_err();
        assert_eq!(get.code(), Code::NotFound);
        let update = client
            .update_deployment_rule(with_token(
                pb::UpdateDeploymentRuleRequest {
                    deployment_rule: Some(pb::DeploymentRule {
                        id: id.clone(),
                        enabled: false,
                        ..Default::default()
                    }),
                    update_mask: mask(&["enabled"]),
                },
                intruder,
            ))
            .await
            .unwrap_err();
        assert_eq!(update.code(), Code::NotFound);
        let delete = client
            .delete_deployment_rule(with_token(
                pb::DeleteDeploymentRuleRequest {
                    id: id.clone(),
                    etag: String::new(),
                },
                intruder,
            ))
            .await
            .unwrap_err();
        assert_eq!(delete.code(), Code::NotFound);
    }
    let list = client
        .list_deployment_rules(with_token(list_project(&project.id, 0, ""), intruder))
        .await
        .unwrap_err();
    assert_eq!(list.code(), Code::NotFound);
    let mut stolen = rule("stolen");
    stolen.environment_modes = vec![EnvironmentMode::Preview.into()];
    let create = client
        .create_deployment_rule(with_token(on_project(&project.id, stolen, ""), intruder))
        .await
        .unwrap_err();
    assert_eq!(create.code(), Code::NotFound);
    let create_env = client
        .create_deployment_rule(with_token(on_environment(&dev.id, rule("x")), intruder))
        .await
        .unwrap_err();
    assert_eq!(create_env.code(), Code::NotFound);

    // A viewer reads both kinds, writes neither.
    let viewer = h.builtin(&h.a.id, BuiltinRole::Viewer).await?;
    for id in [&project_rule.id, &env_rule.id] {
        client
            .get_deployment_rule(with_token(
                pb::GetDeploymentRuleRequest { id: id.clone() },
                &viewer,
            ))
            .await?;
        let denied = client
            .update_deployment_rule(with_token(
                pb::UpdateDeploymentRuleRequest {
                    deployment_rule: Some(pb::DeploymentRule {
                        id: id.clone(),
                        enabled: false,
                        ..Default::default()
                    }),
                    update_mask: mask(&["enabled"]),
                },
                &viewer,
            ))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        let denied = client
            .delete_deployment_rule(with_token(
                pb::DeleteDeploymentRuleRequest {
                    id: id.clone(),
                    etag: String::new(),
                },
                &viewer,
            ))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
    }
    let listed = client
        .list_deployment_rules(with_token(list_project(&project.id, 0, ""), &viewer))
        .await?
        .into_inner();
    assert_eq!(listed.deployment_rules.len(), 1);
    let other_project = h.project(&h.a, "other").await?;
    let denied = client
        .create_deployment_rule(with_token(
            on_project(&other_project.id, rule("mine"), ""),
            &viewer,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    // A devops token writes.
    let devops = h.builtin(&h.a.id, BuiltinRole::Devops).await?;
    client
        .create_deployment_rule(with_token(
            on_project(&other_project.id, rule("mine"), ""),
            &devops,
        ))
        .await?;
    let unauthenticated = client
        .get_deployment_rule(tonic::Request::new(pb::GetDeploymentRuleRequest {
            id: project_rule.id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
    h.stop().await
}
