//! Waiting for the cluster to get there: rollouts of Deployments and StatefulSets, job runs,
//! and pods gone after a stop or delete. Polls (every `poll_interval`, until the command's
//! deadline) rather than watches: a poll is one plain GET the fake API server in the tests
//! can script, and a few seconds of latency do not matter next to a rollout.
//!
//! Failures are read from pod status, so a report says why instead of only "timed out":
//! image pull errors and crash loops fail at once (they do not fix themselves); unschedulable
//! pods and failing readiness may still resolve (an autoscaled node, a slow start), so they
//! only name the failure reason when the deadline passes.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams};
use slipway_proto::agent::v1 as pb;
use tokio::time::Instant;

use super::apply::api_failure;
use super::objects::{ANNOTATION_REVISION, service_selector};
use super::{Reporter, clip};
use crate::runtime::CommandFailure;

/// What the pods of a rollout say about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocker {
    pub reason: pb::FailureReason,
    pub message: String,
    /// True when it will not resolve by waiting: fail now.
    pub fatal: bool,
}

/// Reads why `pods` are not ready, worst first: fatal blockers before waiting ones.
pub fn classify(pods: &[Pod]) -> Option<Blocker> {
    let mut waiting: Option<Blocker> = None;
    for pod in pods {
        let name = pod.metadata.name.as_deref().unwrap_or("instance");
        let Some(status) = &pod.status else { continue };
        let containers = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        for container in containers {
            let Some(state) = &container.state else {
                continue;
            };
            if let Some(wait) = &state.waiting {
                let reason = wait.reason.as_deref().unwrap_or_default();
                let detail = wait.message.as_deref().unwrap_or_default();
                match reason {
                    "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName"
                    | "ErrImageNeverPull" => {
                        return Some(Blocker {
                            reason: pb::FailureReason::ImagePull,
                            message: clip(&format!(
                                "image pull failed: {}",
                                nonempty(detail, reason)
                            )),
                            fatal: true,
                        });
                    }
                    "CrashLoopBackOff" => {
                        let last = container
                            .last_state
                            .as_ref()
                            .and_then(|s| s.terminated.as_ref())
                            .map(|t| {
                                format!(
                                    ": last exit code {} ({})",
                                    t.exit_code,
                                    t.reason.as_deref().unwrap_or("error")
                                )
                            })
                            .unwrap_or_default();
                        return Some(Blocker {
                            reason: pb::FailureReason::CrashLoop,
                            message: clip(&format!(
                                "instance {name} keeps crashing after {} restarts{last}",
                                container.restart_count
                            )),
                            fatal: true,
                        });
                    }
                    "CreateContainerConfigError" | "CreateContainerError" => {
                        return Some(Blocker {
                            reason: pb::FailureReason::InvalidSpec,
                            message: clip(&format!(
                                "instance {name} cannot start: {}",
                                nonempty(detail, reason)
                            )),
                            fatal: true,
                        });
                    }
                    _ => {}
                }
            }
            if state.running.is_some() && !container.ready && waiting.is_none() {
                waiting = Some(Blocker {
                    reason: pb::FailureReason::ProbeFailed,
                    message: clip(&format!("instance {name} runs but is not ready")),
                    fatal: false,
                });
            }
        }
        let unschedulable = status.conditions.iter().flatten().find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        });
        if let Some(condition) = unschedulable {
            // Scheduling comes first: a pod that cannot be placed says more than a slow one.
            waiting = Some(Blocker {
                reason: pb::FailureReason::InsufficientResources,
                message: clip(&format!(
                    "cannot schedule instance {name}: {}",
                    condition.message.as_deref().unwrap_or("no node fits")
                )),
                fatal: false,
            });
        }
    }
    waiting
}

/// What a controller says about its instances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub desired: u32,
    pub ready: u32,
    pub done: bool,
}

/// How a Deployment's rollout stands: done when the controller saw the newest spec and
/// every desired instance is updated, ready and available, with no old one left.
pub fn deployment_progress(deployment: &Deployment) -> Progress {
    let desired = deployment.spec.replicas.unwrap_or(1);
    let generation = deployment.metadata.generation.unwrap_or(0);
    let status = deployment.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    let done = status.observed_generation.unwrap_or(0) >= generation
        && status.updated_replicas.unwrap_or(0) >= desired
        && ready >= desired
        && status.available_replicas.unwrap_or(0) >= desired
        && status.replicas.unwrap_or(0) <= desired;
    Progress {
        desired: to_u32(desired),
        ready: to_u32(ready),
        done,
    }
}

/// How a StatefulSet's rollout stands.
pub fn stateful_set_progress(set: &StatefulSet) -> Progress {
    let desired = set.spec.replicas.unwrap_or(1);
    let generation = set.metadata.generation.unwrap_or(0);
    let status = set.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    let revision_done = match (&status.current_revision, &status.update_revision) {
        (Some(current), Some(update)) => current == update,
        _ => true,
    };
    let done = status.observed_generation.unwrap_or(0) >= generation
        && status.updated_replicas.unwrap_or(desired) >= desired
        && ready >= desired
        && revision_done;
    Progress {
        desired: to_u32(desired),
        ready: to_u32(ready),
        done,
    }
}

/// Which controller a rollout waits on.
#[derive(Clone, Copy, Debug)]
pub enum Rolled {
    Deployment,
    StatefulSet,
}

/// Waits until the `kind` controller of `workload` has rolled out its revision, reporting
/// progress as instances become ready; fails at once on image pull errors and crash loops.
pub async fn wait_rollout(
    client: &Client,
    namespace: &str,
    workload: &pb::WorkloadSpec,
    kind: Rolled,
    deadline: Instant,
    poll: std::time::Duration,
    reporter: &Reporter,
) -> Result<(), CommandFailure> {
    let name = workload.name.as_str();
    let revision = workload.revision.as_str();
    let selector = service_selector(&workload.service_id);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut last_ready = None;
    loop {
        let progress = match kind {
            Rolled::Deployment => {
                let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
                let found = api
                    .get_opt(name)
                    .await
                    .map_err(|e| api_failure(&format!("read deployment {name}"), e))?;
                found.as_ref().map(deployment_progress)
            }
            Rolled::StatefulSet => {
                let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
                let found = api
                    .get_opt(name)
                    .await
                    .map_err(|e| api_failure(&format!("read statefulset {name}"), e))?;
                found.as_ref().map(stateful_set_progress)
            }
        };
        let Some(progress) = progress else {
            return Err(CommandFailure::new(
                pb::FailureReason::RuntimeError,
                format!("{name} disappeared during its rollout"),
            ));
        };
        if progress.done {
            reporter.status(progress, pb::RuntimeState::Running, &[], "");
            return Ok(());
        }
        let listed = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| api_failure("list pods", e))?
            .items;
        // Pods of an older revision may still crash while they are replaced: judge only
        // the ones this rollout created.
        let current: Vec<Pod> = listed
            .into_iter()
            .filter(|pod| {
                pod.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ANNOTATION_REVISION))
                    .is_none_or(|r| r == revision)
            })
            .collect();
        let blocker = classify(&current);
        if let Some(blocker) = blocker.as_ref().filter(|b| b.fatal) {
            reporter.status(
                progress,
                pb::RuntimeState::Error,
                &current,
                &blocker.message,
            );
            return Err(CommandFailure::new(blocker.reason, blocker.message.clone()));
        }
        if last_ready != Some(progress.ready) {
            last_ready = Some(progress.ready);
            reporter.progress(
                "rollout",
                &format!("{}/{} instances ready", progress.ready, progress.desired),
                pb::RuntimeState::Starting,
            );
        }
        if Instant::now() >= deadline {
            reporter.status(
                progress,
                pb::RuntimeState::Error,
                &current,
                "rollout timed out",
            );
            return Err(match blocker {
                Some(blocker) => CommandFailure::new(
                    blocker.reason,
                    clip(&format!("rollout timed out: {}", blocker.message)),
                ),
                None => CommandFailure::new(
                    pb::FailureReason::Timeout,
                    format!(
                        "rollout timed out with {}/{} instances ready",
                        progress.ready, progress.desired
                    ),
                ),
            });
        }
        tokio::time::sleep(poll).await;
    }
}

/// Waits until no pod matching `selector` is left (after a stop or delete).
pub async fn wait_no_pods(
    client: &Client,
    namespace: &str,
    selector: &str,
    deadline: Instant,
    poll: std::time::Duration,
) -> Result<(), CommandFailure> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    loop {
        let left = pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| api_failure("list pods", e))?
            .items
            .len();
        if left == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CommandFailure::new(
                pb::FailureReason::Timeout,
                format!("{left} instances still running when the timeout passed"),
            ));
        }
        tokio::time::sleep(poll).await;
    }
}

/// Waits for the Job `name` to finish: succeeded, or failed on its last attempt. Image
/// pull errors fail at once, like a rollout's.
pub async fn wait_job(
    client: &Client,
    namespace: &str,
    name: &str,
    deadline: Instant,
    poll: std::time::Duration,
) -> Result<(), CommandFailure> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    loop {
        let job = jobs
            .get_opt(name)
            .await
            .map_err(|e| api_failure(&format!("read job {name}"), e))?
            .ok_or_else(|| {
                CommandFailure::new(
                    pb::FailureReason::RuntimeError,
                    format!("job {name} disappeared while it ran"),
                )
            })?;
        let status = job.status.unwrap_or_default();
        if status.succeeded.unwrap_or(0) > 0 {
            return Ok(());
        }
        let failed = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Failed" && c.status == "True");
        if let Some(condition) = failed {
            let reason = if condition.reason.as_deref() == Some("DeadlineExceeded") {
                pb::FailureReason::Timeout
            } else {
                pb::FailureReason::JobFailed
            };
            return Err(CommandFailure::new(
                reason,
                clip(&format!(
                    "job failed: {}",
                    condition
                        .message
                        .as_deref()
                        .or(condition.reason.as_deref())
                        .unwrap_or("last attempt exited with an error")
                )),
            ));
        }
        let listed = pods
            .list(&ListParams::default().labels(&format!("job-name={name}")))
            .await
            .map_err(|e| api_failure("list pods", e))?
            .items;
        if let Some(blocker) =
            classify(&listed).filter(|b| b.fatal && b.reason != pb::FailureReason::CrashLoop)
        {
            return Err(CommandFailure::new(blocker.reason, blocker.message));
        }
        if Instant::now() >= deadline {
            return Err(CommandFailure::new(
                pb::FailureReason::Timeout,
                format!("job {name} still running when the timeout passed"),
            ));
        }
        tokio::time::sleep(poll).await;
    }
}

/// Instance statuses of `pods`, for `WorkloadStatus.instances`.
pub fn instances(pods: &[Pod]) -> Vec<pb::InstanceStatus> {
    pods.iter()
        .take(100)
        .map(|pod| {
            let status = pod.status.clone().unwrap_or_default();
            let containers = status.container_statuses.unwrap_or_default();
            let ready = !containers.is_empty() && containers.iter().all(|c| c.ready);
            let restarts: i32 = containers.iter().map(|c| c.restart_count).sum();
            let blocker = classify(std::slice::from_ref(pod));
            let state = match (&blocker, ready) {
                (Some(b), _) if b.fatal => pb::RuntimeState::Error,
                (_, true) => pb::RuntimeState::Running,
                _ => pb::RuntimeState::Starting,
            };
            pb::InstanceStatus {
                name: pod.metadata.name.clone().unwrap_or_default(),
                runtime_state: state as i32,
                ready,
                restart_count: to_u32(restarts),
                start_time: status.start_time.map(|t| prost_types::Timestamp {
                    seconds: t.0.as_second(),
                    nanos: t.0.subsec_nanosecond(),
                }),
                message: blocker
                    .map(|b| b.message.chars().take(256).collect())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

fn nonempty<'s>(value: &'s str, fallback: &'s str) -> &'s str {
    if value.is_empty() { fallback } else { value }
}

fn to_u32(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "api-1"},
            "status": status
        }))
        .unwrap()
    }

    fn waiting(reason: &str) -> Pod {
        pod(serde_json::json!({"containerStatuses": [{
            "name": "api", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"waiting": {"reason": reason, "message": "Back-off pulling image"}}
        }]}))
    }

    #[test]
    fn image_pull_errors_fail_at_once() {
        for reason in ["ImagePullBackOff", "ErrImagePull"] {
            let blocker = classify(&[waiting(reason)]).unwrap();
            assert_eq!(blocker.reason, pb::FailureReason::ImagePull);
            assert!(blocker.fatal);
            assert_eq!(blocker.message, "image pull failed: back-off pulling image");
        }
    }

    #[test]
    fn unschedulable_pods_wait_and_name_insufficient_resources() {
        let blocker = classify(&[pod(serde_json::json!({"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient cpu."
        }]}))])
        .unwrap();
        assert_eq!(blocker.reason, pb::FailureReason::InsufficientResources);
        assert!(!blocker.fatal);
    }

    #[test]
    fn running_but_not_ready_is_a_failing_probe() {
        let blocker = classify(&[pod(serde_json::json!({"containerStatuses": [{
            "name": "api", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"running": {}}
        }]}))])
        .unwrap();
        assert_eq!(blocker.reason, pb::FailureReason::ProbeFailed);
        assert!(!blocker.fatal);
    }

    #[test]
    fn creating_containers_block_nothing() {
        assert_eq!(classify(&[waiting("ContainerCreating")]), None);
    }
}
