//! Helm releases through the `helm` CLI, when the agent's image has it: Helm's own logic
//! (hooks, upgrades, atomic rollback) is too large to reimplement, and an agent without it
//! says so clearly instead of half-applying a chart.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use slipway_proto::agent::v1 as pb;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::clip;
use crate::runtime::CommandFailure;

/// The message of every helm operation on an agent without the CLI.
pub const HELM_MISSING: &str = "helm is not installed on the agent";

/// The `helm` executable: `binary` itself when it is a path, else found on `PATH`.
pub fn find(binary: &Path) -> Result<PathBuf, CommandFailure> {
    let missing = || CommandFailure::new(pb::FailureReason::RuntimeError, HELM_MISSING);
    if binary.components().count() > 1 {
        return binary
            .is_file()
            .then(|| binary.to_owned())
            .ok_or_else(missing);
    }
    let path = std::env::var_os("PATH").ok_or_else(missing)?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
        .ok_or_else(missing)
}

/// The release name of a helm workload: `release_name`, or the workload's name.
pub fn release_name(workload: &pb::WorkloadSpec) -> String {
    match &workload.settings {
        Some(pb::workload_spec::Settings::Helm(helm)) if !helm.release_name.is_empty() => {
            helm.release_name.clone()
        }
        _ => workload.name.clone(),
    }
}

/// `helm upgrade --install --atomic --wait` of the release in `namespace`. Values go through
/// a 0600 file removed afterwards (they may hold secrets); registry credentials of an OCI
/// chart through `helm registry login --password-stdin`.
pub async fn upgrade(
    helm: &Path,
    namespace: &str,
    workload: &pb::WorkloadSpec,
    spec: &pb::HelmWorkload,
    command_id: &str,
    timeout: Duration,
) -> Result<(), CommandFailure> {
    let chart = spec.chart.clone().unwrap_or_default();
    let release = release_name(workload);
    let oci = chart.repository_url.starts_with("oci://");
    let mut args: Vec<String> = vec!["upgrade".into(), "--install".into(), release.clone()];
    if oci {
        args.push(format!(
            "{}/{}",
            chart.repository_url.trim_end_matches('/'),
            chart.name
        ));
    } else {
        args.push(chart.name.clone());
        args.push("--repo".into());
        args.push(chart.repository_url.clone());
    }
    args.extend([
        "--version".into(),
        chart.version.clone(),
        "--namespace".into(),
        namespace.to_owned(),
        "--atomic".into(),
        "--wait".into(),
        "--timeout".into(),
        format!("{}s", timeout.as_secs().max(1)),
    ]);
    if let Some(credentials) = &chart.credentials {
        if oci {
            login(helm, credentials).await?;
        } else {
            // Gap: `helm upgrade` takes an HTTP repository's password only as an argument.
            args.extend([
                "--username".into(),
                credentials.username.clone(),
                "--password".into(),
                credentials.password.clone(),
            ]);
        }
    }
    let values = values_file(command_id, &workload.name, &spec.values_yaml).await?;
    args.push("--values".into());
    args.push(values.display().to_string());
    let result = run(helm, &args, None).await;
    let _ = tokio::fs::remove_file(&values).await;
    result.map(drop).map_err(|stderr| {
        CommandFailure::new(
            pb::FailureReason::HelmFailed,
            clip(&format!("helm upgrade failed: {stderr}")),
        )
    })
}

/// `helm uninstall` of the release; a release that is not there is already uninstalled.
pub async fn uninstall(
    helm: &Path,
    namespace: &str,
    workload: &pb::WorkloadSpec,
    timeout: Duration,
) -> Result<(), CommandFailure> {
    let args = vec![
        "uninstall".to_owned(),
        release_name(workload),
        "--namespace".to_owned(),
        namespace.to_owned(),
        "--wait".to_owned(),
        "--timeout".to_owned(),
        format!("{}s", timeout.as_secs().max(1)),
    ];
    match run(helm, &args, None).await {
        Ok(_) => Ok(()),
        Err(stderr) if stderr.contains("not found") => Ok(()),
        Err(stderr) => Err(CommandFailure::new(
            pb::FailureReason::HelmFailed,
            clip(&format!("helm uninstall failed: {stderr}")),
        )),
    }
}

async fn login(helm: &Path, credentials: &pb::RegistryCredentials) -> Result<(), CommandFailure> {
    let args = vec![
        "registry".to_owned(),
        "login".to_owned(),
        credentials.server.clone(),
        "--username".to_owned(),
        credentials.username.clone(),
        "--password-stdin".to_owned(),
    ];
    run(helm, &args, Some(credentials.password.as_bytes()))
        .await
        .map(drop)
        .map_err(|stderr| {
            CommandFailure::new(
                pb::FailureReason::HelmFailed,
                clip(&format!(
                    "helm registry login to {} failed: {stderr}",
                    credentials.server
                )),
            )
        })
}

async fn values_file(command_id: &str, name: &str, yaml: &str) -> Result<PathBuf, CommandFailure> {
    let path = std::env::temp_dir().join(format!("slipway-helm-{command_id}-{name}.yaml"));
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true).mode(0o600);
    let written = async {
        let mut file = options.open(&path).await?;
        file.write_all(yaml.as_bytes()).await?;
        file.flush().await
    }
    .await;
    written.map(|()| path).map_err(|error| {
        CommandFailure::new(
            pb::FailureReason::Internal,
            format!("cannot write the helm values file: {error}"),
        )
    })
}

/// Runs helm; on failure, the last lines of its standard error (never its arguments).
async fn run(helm: &Path, args: &[String], stdin: Option<&[u8]>) -> Result<String, String> {
    let mut child = Command::new(helm)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot start helm: {error}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)
            .await
            .map_err(|error| format!("cannot write to helm: {error}"))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|error| format!("helm did not finish: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        Err(tail
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("; ")
            .to_lowercase())
    }
}
