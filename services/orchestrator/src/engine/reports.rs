//! Consumers of what comes back: agents' reports (`slipway.agent.*.reports`) and build
//! results (`slipway.build.results`). Each is one durable consumer shared by every replica,
//! so each message is handled once; it is written to the database (which is what running
//! deployments read, whichever replica runs them) before it is acknowledged, and waiting
//! stages in this process are woken at once.

use std::time::Duration;

use prost::Message as _;
use slipway_events::{ConsumerSpec, StreamKind};
use slipway_proto::agent::v1 as agent;
use slipway_proto::build::v1 as build;

use super::Engine;
use crate::store::{BuildResultRow, StepReportRow, now};

/// The durable consumer of agents' reports, shared by the replicas.
pub const REPORTS_DURABLE: &str = "orchestrator-deployments-reports";
/// The durable consumer of build results, shared by the replicas.
pub const BUILD_RESULTS_DURABLE: &str = "orchestrator-build-results";
/// How long a delivered report may go unacknowledged before JetStream delivers it again.
/// A delivery can be lost between server and client (a pull that expired as it was
/// answered, missed heartbeats on a loaded machine); it comes back only after this, while
/// a stage waits for it. Handling is one idempotent insert, so a short wait costs at most
/// a repeated insert that changes nothing.
const REDELIVER_AFTER: Duration = Duration::from_secs(3);

fn time(ts: Option<&prost_types::Timestamp>) -> chrono::DateTime<chrono::Utc> {
    ts.and_then(|t| {
        chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
    })
    .unwrap_or_else(now)
}

/// Folds every report into the store, forever (reconnecting after errors).
pub async fn consume_reports(engine: Engine) {
    loop {
        let spec = ConsumerSpec::new(StreamKind::Agent, REPORTS_DURABLE)
            .filter("slipway.agent.*.reports")
            .ack_wait(REDELIVER_AFTER)
            .prefetch(16);
        let mut consumer = match engine.bus().consumer(spec).await {
            Ok(consumer) => consumer,
            Err(error) => {
                tracing::warn!(%error, "cannot consume agent reports; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(delivery) = consumer.next().await {
            let delivery = match delivery {
                Ok(delivery) => delivery,
                Err(error) => {
                    tracing::warn!(%error, "agent report delivery failed");
                    continue;
                }
            };
            let handled = match agent::AgentReport::decode(delivery.payload().as_ref()) {
                Ok(report) => handle_report(&engine, report).await,
                Err(error) => {
                    tracing::warn!(%error, "undecodable agent report dropped");
                    Ok(())
                }
            };
            match handled {
                Ok(()) => {
                    if let Err(error) = delivery.ack().await {
                        tracing::warn!(%error, "cannot acknowledge an agent report");
                    }
                    engine.reported();
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot store an agent report; it will be redelivered");
                    let _ = delivery.nack(Some(Duration::from_millis(500))).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn handle_report(
    engine: &Engine,
    report: agent::AgentReport,
) -> Result<(), crate::store::StoreError> {
    let store = engine.store();
    match report.report {
        Some(agent::agent_report::Report::StepReport(step)) => {
            store
                .insert_step_report(&StepReportRow {
                    command_id: step.command_id,
                    service_id: step.service_id,
                    sequence: i64::from(step.sequence),
                    deployment_id: step.deployment_id,
                    step: step.step,
                    status: step.status,
                    message: step.message.chars().take(1024).collect(),
                    runtime_state: step.runtime_state,
                    failure_reason: step.failure_reason,
                    time: time(step.time.as_ref()),
                })
                .await?;
        }
        Some(agent::agent_report::Report::CommandAck(ack))
            if ack.result == agent::CommandAckResult::Rejected as i32 =>
        {
            {
                // A rejected command never reports steps: record its end here.
                let message = if ack.message.is_empty() {
                    "the agent rejected the command".to_owned()
                } else {
                    format!("the agent rejected the command: {}", ack.message)
                };
                store
                    .insert_step_report(&StepReportRow {
                        command_id: ack.command_id,
                        service_id: String::new(),
                        sequence: i64::from(u32::MAX) + 1,
                        deployment_id: String::new(),
                        step: "command".to_owned(),
                        status: agent::StepStatus::Failed as i32,
                        message,
                        runtime_state: 0,
                        failure_reason: agent::FailureReason::InvalidSpec as i32,
                        time: time(report.receive_time.as_ref()),
                    })
                    .await?;
            }
        }
        Some(agent::agent_report::Report::CommandAck(_)) => {}
        Some(agent::agent_report::Report::WorkloadStatus(status)) => {
            store
                .observe_workload(
                    &status.environment_id,
                    &status.service_id,
                    status.runtime_state,
                    i32::try_from(status.ready_instances).unwrap_or(i32::MAX),
                    i32::try_from(status.desired_instances).unwrap_or(i32::MAX),
                    &status.message,
                    time(status.observe_time.as_ref()),
                )
                .await?;
        }
        None => {}
    }
    Ok(())
}

/// Stores every build result, forever (reconnecting after errors).
pub async fn consume_build_results(engine: Engine) {
    loop {
        let spec = ConsumerSpec::new(StreamKind::Builds, BUILD_RESULTS_DURABLE)
            .filter("slipway.build.results")
            .ack_wait(REDELIVER_AFTER);
        let mut consumer = match engine.bus().consumer(spec).await {
            Ok(consumer) => consumer,
            Err(error) => {
                tracing::warn!(%error, "cannot consume build results; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(delivery) = consumer.next().await {
            let Ok(delivery) = delivery else {
                continue;
            };
            let stored = match build::BuildResult::decode(delivery.payload().as_ref()) {
                Ok(result) => {
                    let message = result
                        .failure
                        .as_ref()
                        .map(|f| f.message.clone())
                        .unwrap_or_default();
                    engine
                        .store()
                        .insert_build_result(&BuildResultRow {
                            job_id: result.job_id,
                            deployment_id: result.deployment_id,
                            service_id: result.service_id,
                            outcome: result.outcome,
                            image_reference: result.image_reference,
                            local_artifact_path: result.local_artifact_path,
                            message,
                        })
                        .await
                }
                Err(_) => Ok(()),
            };
            if stored.is_ok() {
                let _ = delivery.ack().await;
                engine.reported();
            } else {
                let _ = delivery.nack(Some(Duration::from_millis(500))).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
