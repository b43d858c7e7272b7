//! `LogService` against real NATS JetStream and PostgreSQL: tails (backfill, hand-over to
//! live, filters, slow clients), queries (pagination both ways), authorization, tenant
//! isolation, retention and secret masking along the producer path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime};

use common::{
    BoxError, Harness, Options, TestResult, backfill, filter, line, live, messages, tail,
    with_token,
};
use slipway_identity::store::BuiltinRole;
use slipway_log_streaming::LogOptions;
use slipway_proto::common::v1::EnvironmentMode;
use slipway_proto::logs::v1 as pb;
use slipway_proto::logs::v1::tail_logs_request::Backfill;
use tonic::Code;

fn tail_request(environment_id: &str, backfill: Option<Backfill>) -> pb::TailLogsRequest {
    pb::TailLogsRequest {
        filter: Some(filter(environment_id)),
        backfill,
    }
}

fn query(environment_id: &str, order: pb::LogOrder, page_size: i32) -> pb::QueryLogsRequest {
    pb::QueryLogsRequest {
        filter: Some(filter(environment_id)),
        order: order.into(),
        page_size,
        ..Default::default()
    }
}

fn strictly_increasing(lines: &[pb::LogLine]) -> bool {
    lines.windows(2).all(|w| w[0].sequence < w[1].sequence)
}

#[tokio::test]
async fn a_tail_sends_its_backfill_then_live_lines_in_order() -> TestResult {
    let h = Harness::start().await?;
    let env = h.environment(&h.a, EnvironmentMode::Development).await?;
    h.say(&h.a, &env, &["old-0", "old-1"]).await?;
    h.say(&h.a, &env, &["old-2", "old-3", "old-4"]).await?;
    let viewer = h.token(&h.a.id, BuiltinRole::Viewer).await?;
    let mut client = h.client();

    let mut stream = tail(
        &mut client,
        &viewer,
        tail_request(&env, Some(Backfill::TailLines(3))),
    )
    .await?;
    let back = backfill(&mut stream).await?;
    assert_eq!(messages(&back), ["old-2", "old-3", "old-4"]);
    h.say(&h.a, &env, &["new-0", "new-1"]).await?;
    h.say(&h.a, &env, &["new-2"]).await?;
    let (lines, dropped) = live(&mut stream, 3).await?;
    assert_eq!(messages(&lines), ["new-0", "new-1", "new-2"]);
    assert!(dropped.is_empty());
    let all: Vec<pb::LogLine> = back.iter().chain(&lines).cloned().collect();
    assert!(strictly_increasing(&all), "{all:?}");
    assert!(
        all.iter()
            .all(|l| l.organization_id == h.a.id && l.environment_id == env)
    );

    // Resuming after a sequence sends exactly what followed it, then live lines.
    let after = back[1].sequence;
    let mut resumed = tail(
        &mut client,
        &viewer,
        tail_request(&env, Some(Backfill::AfterSequence(after))),
    )
    .await?;
    assert_eq!(
        messages(&backfill(&mut resumed).await?),
        ["old-4", "new-0", "new-1", "new-2"]
    );

    // Since a time: the lines written from then on.
    let since = SystemTime::now();
    h.say(&h.a, &env, &["later"]).await?;
    let mut from_time = tail(
        &mut client,
        &viewer,
        tail_request(&env, Some(Backfill::SinceTime(since.into()))),
    )
    .await?;
    assert_eq!(messages(&backfill(&mut from_time).await?), ["later"]);
    let (lines, _) = live(&mut resumed, 1).await?;
    assert_eq!(messages(&lines), ["later"]);

    // Live only: nothing before `caught_up`.
    let mut live_only = tail(&mut client, &viewer, tail_request(&env, None)).await?;
    assert!(backfill(&mut live_only).await?.is_empty());
    h.say(&h.a, &env, &["fresh"]).await?;
    assert_eq!(messages(&live(&mut live_only, 1).await?.0), ["fresh"]);
    Ok(())
}

#[tokio::test]
async fn every_filter_narrows_tails_and_queries() -> TestResult {
    let h = Harness::start().await?;
    let env = h.environment(&h.a, EnvironmentMode::Staging).await?;
    let mk = |message: &str, f: &dyn Fn(&mut pb::LogLine)| {
        let mut l = line(message);
        f(&mut l);
        l
    };
    h.publish(
        &h.a,
        &env,
        "svc",
        vec![
            mk("plain info", &|_| {}),
            mk("deploy step", &|l| {
                l.kind = pb::LogKind::Deployment.into();
                l.deployment_id = "dep-1".into();
            }),
            mk("other instance", &|l| l.instance = "svc-2".into()),
            mk("a WARNING here", &|l| {
                l.severity = pb::LogSeverity::Warn.into()
            }),
            mk("an error", &|l| l.severity = pb::LogSeverity::Error.into()),
            mk("debugging", &|l| l.severity = pb::LogSeverity::Debug.into()),
        ],
    )
    .await?;
    let mut build_line = line("building");
    build_line.kind = pb::LogKind::Build.into();
    build_line.service_id = "api".into();
    h.publish(&h.a, &env, "api", vec![build_line]).await?;

    let viewer = h.token(&h.a.id, BuiltinRole::Viewer).await?;
    let mut client = h.client();
    let run = |f: pb::LogFilter| {
        let mut client = client.clone();
        let viewer = viewer.clone();
        async move {
            let request = pb::QueryLogsRequest {
                filter: Some(f),
                order: pb::LogOrder::OldestFirst.into(),
                ..Default::default()
            };
            let response = client.query_logs(with_token(request, &viewer)).await?;
            Ok::<_, BoxError>(messages(&response.into_inner().lines))
        }
    };
    let base = filter(&env);
    assert_eq!(run(base.clone()).await?.len(), 7);
    assert_eq!(
        run(pb::LogFilter {
            service_id: "api".into(),
            ..base.clone()
        })
        .await?,
        ["building"]
    );
    assert_eq!(
        run(pb::LogFilter {
            deployment_id: "dep-1".into(),
            ..base.clone()
        })
        .await?,
        ["deploy step"]
    );
    assert_eq!(
        run(pb::LogFilter {
            kinds: vec![pb::LogKind::Build.into(), pb::LogKind::Deployment.into()],
            ..base.clone()
        })
        .await?,
        ["deploy step", "building"]
    );
    assert_eq!(
        run(pb::LogFilter {
            instance: "svc-2".into(),
            ..base.clone()
        })
        .await?,
        ["other instance"]
    );
    assert_eq!(
        run(pb::LogFilter {
            min_severity: pb::LogSeverity::Warn.into(),
            ..base.clone()
        })
        .await?,
        ["a WARNING here", "an error"]
    );
    // Unknown severity counts as INFO.
    assert_eq!(
        run(pb::LogFilter {
            min_severity: pb::LogSeverity::Info.into(),
            ..base.clone()
        })
        .await?
        .len(),
        6
    );
    assert_eq!(
        run(pb::LogFilter {
            contains: "warning".into(),
            ..base.clone()
        })
        .await?,
        ["a WARNING here"]
    );

    // A filtered tail: backfill and live lines both pass the filter.
    let request = pb::TailLogsRequest {
        filter: Some(pb::LogFilter {
            min_severity: pb::LogSeverity::Error.into(),
            ..base.clone()
        }),
        backfill: Some(Backfill::TailLines(10)),
    };
    let mut stream = tail(&mut client, &viewer, request).await?;
    assert_eq!(messages(&backfill(&mut stream).await?), ["an error"]);
    let mut fatal = line("fatal again");
    fatal.severity = pb::LogSeverity::Error.into();
    h.publish(&h.a, &env, "svc", vec![line("ignored"), fatal])
        .await?;
    assert_eq!(messages(&live(&mut stream, 1).await?.0), ["fatal again"]);

    // Malformed filters.
    for bad in [
        pb::LogFilter {
            kinds: vec![pb::LogKind::Unspecified.into()],
            ..base.clone()
        },
        pb::LogFilter {
            contains: "x".repeat(257),
            ..base.clone()
        },
        pb::LogFilter {
            environment_id: String::new(),
            ..base.clone()
        },
    ] {
        let request = pb::QueryLogsRequest {
            filter: Some(bad),
            ..Default::default()
        };
        let status = client
            .query_logs(with_token(request, &viewer))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    let status = tail(
        &mut client,
        &viewer,
        tail_request(&env, Some(Backfill::TailLines(10_001))),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    Ok(())
}

#[tokio::test]
async fn queries_page_through_both_orders() -> TestResult {
    let h = Harness::start().await?;
    let all: Vec<String> = (0..12).map(|i| format!("line-{i:02}")).collect();
    let viewer = h.token(&h.a.id, BuiltinRole::Viewer).await?;
    let mut client = h.client();
    let mut env = String::new();
    for order in [pb::LogOrder::OldestFirst, pb::LogOrder::NewestFirst] {
        env = h.environment(&h.a, EnvironmentMode::Production).await?;
        for chunk in all.chunks(4) {
            let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
            h.say(&h.a, &env, &chunk).await?;
        }
        let mut request = query(&env, order, 5);
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = client
                .query_logs(with_token(request.clone(), &viewer))
                .await?
                .into_inner();
            pages += 1;
            assert!(page.lines.len() <= 5);
            seen.extend(messages(&page.lines));
            // Lines arriving between pages do not shift them (the end is fixed).
            h.say(&h.a, &env, &["arrived later"]).await?;
            if page.next_page_token.is_empty() {
                break;
            }
            request.page_token = page.next_page_token;
        }
        let mut expected = all.clone();
        if order == pb::LogOrder::NewestFirst {
            expected.reverse();
        }
        assert_eq!(seen, expected, "{order:?}");
        assert_eq!(pages, 3);
    }
    // Unset order is newest first; a token belongs to its query.
    let page = client
        .query_logs(with_token(
            query(&env, pb::LogOrder::Unspecified, 1),
            &viewer,
        ))
        .await?
        .into_inner();
    assert_eq!(messages(&page.lines), ["arrived later"]);
    let mut other = query(&env, pb::LogOrder::OldestFirst, 1);
    other.page_token = page.next_page_token;
    let status = client
        .query_logs(with_token(other, &viewer))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    // A time range.
    let start = SystemTime::now();
    h.say(&h.a, &env, &["inside"]).await?;
    let end = SystemTime::now();
    h.say(&h.a, &env, &["after the end"]).await?;
    let mut ranged = query(&env, pb::LogOrder::OldestFirst, 0);
    ranged.start_time = Some(start.into());
    ranged.end_time = Some(end.into());
    let page = client
        .query_logs(with_token(ranged.clone(), &viewer))
        .await?
        .into_inner();
    assert_eq!(messages(&page.lines), ["inside"]);
    std::mem::swap(&mut ranged.start_time, &mut ranged.end_time);
    let status = client
        .query_logs(with_token(ranged, &viewer))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let mut too_big = query(&env, pb::LogOrder::OldestFirst, 5001);
    too_big.page_size = 5001;
    let status = client
        .query_logs(with_token(too_big, &viewer))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    Ok(())
}

#[tokio::test]
async fn only_viewers_of_the_organization_read_its_logs() -> TestResult {
    let h = Harness::start().await?;
    let env = h.environment(&h.a, EnvironmentMode::Production).await?;
    h.say(&h.a, &env, &["secret-ish business"]).await?;
    let mut client = h.client();
    let request = || query(&env, pb::LogOrder::OldestFirst, 0);

    for role in [BuiltinRole::Viewer, BuiltinRole::Devops, BuiltinRole::Admin] {
        let token = h.token(&h.a.id, role).await?;
        let page = client
            .query_logs(with_token(request(), &token))
            .await?
            .into_inner();
        assert_eq!(messages(&page.lines), ["secret-ish business"], "{role:?}");
    }
    let billing = h.token(&h.a.id, BuiltinRole::Billing).await?;
    let status = client
        .query_logs(with_token(request(), &billing))
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), Code::PermissionDenied | Code::NotFound),
        "{status:?}"
    );
    let status = tail(&mut client, &billing, tail_request(&env, None))
        .await
        .unwrap_err();
    assert!(matches!(
        status.code(),
        Code::PermissionDenied | Code::NotFound
    ));

    // Another organization: the environment does not exist for it.
    let status = client
        .query_logs(with_token(request(), &h.b.admin))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = tail(
        &mut client,
        &h.b.admin,
        tail_request(&env, Some(Backfill::TailLines(5))),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // Unknown environments, and no credentials at all.
    let status = client
        .query_logs(with_token(
            query("no-such-env", pb::LogOrder::OldestFirst, 0),
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client.query_logs(request()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // Lines another organization publishes under A's environment id stay in its own
    // subject: A's readers never see them.
    let viewer = h.token(&h.a.id, BuiltinRole::Viewer).await?;
    let mut stream = tail(&mut client, &viewer, tail_request(&env, None)).await?;
    backfill(&mut stream).await?;
    h.say(&h.b, &env, &["injected by b"]).await?;
    h.say(&h.a, &env, &["from a"]).await?;
    assert_eq!(messages(&live(&mut stream, 1).await?.0), ["from a"]);
    let page = client
        .query_logs(with_token(request(), &viewer))
        .await?
        .into_inner();
    assert_eq!(messages(&page.lines), ["secret-ish business", "from a"]);
    Ok(())
}

#[tokio::test]
async fn a_stalled_tail_gets_a_dropped_marker_while_another_keeps_every_line() -> TestResult {
    const BATCHES: usize = 40;
    const PER_BATCH: usize = 100;
    let h = Harness::start_with(Options {
        logs: LogOptions {
            tail_buffer: 500,
            ..LogOptions::default()
        },
        ..Options::default()
    })
    .await?;
    let env = h.environment(&h.a, EnvironmentMode::Development).await?;
    let viewer = h.token(&h.a.id, BuiltinRole::Viewer).await?;
    let mut client = h.client();
    let mut stalled = tail(&mut client, &viewer, tail_request(&env, None)).await?;
    backfill(&mut stalled).await?;
    let mut active = tail(&mut client, &viewer, tail_request(&env, None)).await?;
    backfill(&mut active).await?;
    let reader = tokio::spawn(async move { live(&mut active, BATCHES * PER_BATCH).await });

    // About 16 MiB: far more than the HTTP/2 windows, the response channel and the tail's
    // buffer can hold for a client that reads nothing.
    let padding = "x".repeat(4000);
    for batch in 0..BATCHES {
        let lines = (0..PER_BATCH)
            .map(|i| line(&format!("{:05} {padding}", batch * PER_BATCH + i)))
            .collect();
        h.publish(&h.a, &env, "svc", lines).await?;
    }
    let (lines, dropped) = reader.await??;
    assert!(
        dropped.is_empty(),
        "the reading tail lost lines: {dropped:?}"
    );
    assert_eq!(lines.len(), BATCHES * PER_BATCH);
    assert!(strictly_increasing(&lines));

    // The stalled tail now reads: a marker stands for what it missed, and lines plus
    // dropped counts make up exactly what was published.
    let mut received = Vec::new();
    let mut markers = Vec::new();
    let last = format!("{:05}", BATCHES * PER_BATCH - 1);
    while !received
        .last()
        .is_some_and(|l: &pb::LogLine| l.message.starts_with(&last))
    {
        let response = stalled.message().await?.ok_or("the stalled tail ended")?;
        markers.extend(response.dropped);
        received.extend(response.lines);
    }
    assert!(!markers.is_empty(), "no dropped-lines marker");
    assert!(
        markers
            .iter()
            .all(|m| m.reason == i32::from(pb::DropReason::SlowClient) && m.count > 0)
    );
    let dropped: u64 = markers.iter().map(|m| m.count).sum();
    assert_eq!(
        received.len() as u64 + dropped,
        (BATCHES * PER_BATCH) as u64
    );
    assert!(strictly_increasing(&received));
    Ok(())
}

#[tokio::test]
async fn lines_older_than_the_retention_are_gone() -> TestResult {
    let h = Harness::start_with(Options {
        logs_max_age: Some(Duration::from_secs(2)),
        ..Options::default()
    })
    .await?;
    let env = h.environment(&h.a, EnvironmentMode::Development).await?;
    h.say(&h.a, &env, &["short-lived"]).await?;
    let viewer = h.token(&h.a.id, BuiltinRole::Viewer).await?;
    let mut client = h.client();
    // Wait until JetStream has aged the batch out (polled, not timed).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while h
        .bus
        .stream_info(slipway_events::StreamKind::Logs)
        .await?
        .messages
        > 0
    {
        assert!(tokio::time::Instant::now() < deadline, "LOGS never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let page = client
        .query_logs(with_token(
            query(&env, pb::LogOrder::OldestFirst, 0),
            &viewer,
        ))
        .await?
        .into_inner();
    assert!(page.lines.is_empty(), "{page:?}");
    let mut stream = tail(
        &mut client,
        &viewer,
        tail_request(&env, Some(Backfill::TailLines(10))),
    )
    .await?;
    assert!(backfill(&mut stream).await?.is_empty());
    // The stream still works after expiry.
    h.say(&h.a, &env, &["fresh"]).await?;
    assert_eq!(messages(&live(&mut stream, 1).await?.0), ["fresh"]);
    Ok(())
}

#[tokio::test]
async fn a_secret_written_by_a_workload_arrives_masked() -> TestResult {
    use slipway_proto::agent::v1 as agent;
    let h = Harness::start().await?;
    let env = h.environment(&h.a, EnvironmentMode::Development).await?;
    // The agent learns the secret from its command and masks the workload's output; the
    // orchestrator relays the chunk as a batch, as in production.
    let mask = slipway_agent::mask::SecretMask::default();
    let program = agent::Program {
        env: vec![agent::EnvVar {
            name: "DB_PASSWORD".into(),
            value: "s3cr3t-p4ss".into(),
            is_secret: true,
        }],
        ..Default::default()
    };
    mask.learn(&agent::Command {
        environment_id: env.clone(),
        workloads: vec![agent::WorkloadSpec {
            settings: Some(agent::workload_spec::Settings::Application(
                agent::ApplicationWorkload {
                    program: Some(program),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }],
        ..Default::default()
    });
    let mut chunk = agent::LogChunk {
        organization_id: h.a.id.clone(),
        project_id: "p".into(),
        environment_id: env.clone(),
        service_id: "svc".into(),
        instance: "svc-1".into(),
        stream: pb::LogStream::Stdout.into(),
        lines: vec![agent::LogChunkLine {
            time: Some(SystemTime::now().into()),
            text: "connecting with password s3cr3t-p4ss".into(),
        }],
        ..Default::default()
    };
    mask.apply(&mut chunk);
    for out in slipway_orchestrator::agents::relay::log_batches("cluster", &h.a.id, chunk)? {
        slipway_orchestrator::agents::relay::publish(
            &*h.bus,
            &out.subject,
            &out.batch.id,
            &out.batch,
        )
        .await?;
    }
    let viewer = h.token(&h.a.id, BuiltinRole::Viewer).await?;
    let page = h
        .client()
        .query_logs(with_token(
            query(&env, pb::LogOrder::OldestFirst, 0),
            &viewer,
        ))
        .await?
        .into_inner();
    assert_eq!(messages(&page.lines), ["connecting with password ********"]);
    Ok(())
}

#[tokio::test]
async fn an_organization_at_its_tail_limit_is_refused_until_one_closes() -> TestResult {
    let h = Harness::start_with(Options {
        logs: LogOptions {
            max_tails_per_organization: 2,
            ..LogOptions::default()
        },
        ..Options::default()
    })
    .await?;
    let env_a = h.environment(&h.a, EnvironmentMode::Development).await?;
    let env_b = h.environment(&h.b, EnvironmentMode::Development).await?;
    let viewer_a = h.token(&h.a.id, BuiltinRole::Viewer).await?;
    let viewer_b = h.token(&h.b.id, BuiltinRole::Viewer).await?;
    let mut client = h.client();
    let first = tail(&mut client, &viewer_a, tail_request(&env_a, None)).await?;
    let _second = tail(&mut client, &viewer_a, tail_request(&env_a, None)).await?;

    let refused = tail(&mut client, &viewer_a, tail_request(&env_a, None))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let details = tonic_types::StatusExt::get_error_details(&refused);
    let quota = details.quota_failure().ok_or("no QuotaFailure detail")?;
    assert_eq!(
        quota.violations[0].subject,
        format!("organization:{}", h.a.id)
    );

    // Another organization's tails are not counted against it.
    let mut other = tail(&mut client, &viewer_b, tail_request(&env_b, None)).await?;
    backfill(&mut other).await?;

    // A tail whose client went away gives its place back.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tail(&mut client, &viewer_a, tail_request(&env_a, None)).await {
            Ok(mut third) => {
                backfill(&mut third).await?;
                break;
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "a closed tail kept its place"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => return Err(status.into()),
        }
    }
    Ok(())
}
