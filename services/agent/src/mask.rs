//! Secret values are masked out of workload output before it leaves the agent.
//!
//! The agent is the one place that both sees every line a workload writes and holds the
//! decrypted secrets it was given (`EnvVar`/`FileMount` with `is_secret` in its commands),
//! so masking here means a secret a workload prints never crosses the network, never
//! reaches the orchestrator's relay, and is never stored in `LOGS`.
//!
//! Known per environment from the commands this agent process received; values shorter
//! than [`MIN_LEN`] are not masked (a secret `1` would blank every digit one). An agent
//! restarted while its workloads keep running masks again from their next command.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use slipway_proto::agent::v1 as pb;
use slipway_proto::agent::v1::workload_spec::Settings;

/// What a masked secret becomes.
pub const MASK: &str = "********";

/// Shortest value masked, in bytes.
pub const MIN_LEN: usize = 4;

/// The secret values known per environment.
#[derive(Debug, Default)]
pub struct SecretMask {
    by_environment: Mutex<HashMap<String, Vec<String>>>,
}

impl SecretMask {
    /// Remembers the secret values `command` carries for its environment.
    pub fn learn(&self, command: &pb::Command) {
        let mut found = BTreeSet::new();
        for workload in &command.workloads {
            let program = match &workload.settings {
                Some(Settings::Application(w)) => w.program.as_ref(),
                Some(Settings::Database(w)) => w.program.as_ref(),
                Some(Settings::CronJob(w)) => w.program.as_ref(),
                Some(Settings::Job(w)) => w.program.as_ref(),
                Some(Settings::Helm(_)) | None => None,
            };
            let Some(program) = program else { continue };
            for var in program.env.iter().filter(|var| var.is_secret) {
                found.insert(var.value.clone());
            }
            for file in program.files.iter().filter(|file| file.is_secret) {
                if let Ok(text) = std::str::from_utf8(&file.content) {
                    // A secret file is often one value with a trailing newline.
                    found.insert(text.trim().to_owned());
                }
            }
        }
        found.retain(|value| value.len() >= MIN_LEN);
        if found.is_empty() {
            return;
        }
        let mut by_environment = self
            .by_environment
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let known = by_environment
            .entry(command.environment_id.clone())
            .or_default();
        known.extend(found);
        // Longest first, so a secret containing another is masked whole.
        known.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        known.dedup();
    }

    /// Replaces every known secret value of the chunk's environment in its lines.
    pub fn apply(&self, chunk: &mut pb::LogChunk) {
        let by_environment = self
            .by_environment
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(secrets) = by_environment.get(&chunk.environment_id) else {
            return;
        };
        for line in &mut chunk.lines {
            for secret in secrets {
                if line.text.contains(secret.as_str()) {
                    line.text = line.text.replace(secret.as_str(), MASK);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(environment_id: &str, vars: &[(&str, bool)]) -> pb::Command {
        pb::Command {
            environment_id: environment_id.into(),
            workloads: vec![pb::WorkloadSpec {
                settings: Some(Settings::Application(pb::ApplicationWorkload {
                    program: Some(pb::Program {
                        env: vars
                            .iter()
                            .map(|(value, is_secret)| pb::EnvVar {
                                name: "K".into(),
                                value: (*value).into(),
                                is_secret: *is_secret,
                            })
                            .collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn chunk(environment_id: &str, text: &str) -> pb::LogChunk {
        pb::LogChunk {
            environment_id: environment_id.into(),
            lines: vec![pb::LogChunkLine {
                time: None,
                text: text.into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn secrets_of_the_environment_are_masked_and_nothing_else() {
        let mask = SecretMask::default();
        mask.learn(&command(
            "e1",
            &[
                ("hunter22", true),
                ("hunter22-long", true),
                ("public", false),
                ("ab", true),
            ],
        ));
        let mut line = chunk("e1", "pw=hunter22 and hunter22-long, public ab");
        mask.apply(&mut line);
        assert_eq!(line.lines[0].text, "pw=******** and ********, public ab");
        let mut other = chunk("e2", "pw=hunter22");
        mask.apply(&mut other);
        assert_eq!(other.lines[0].text, "pw=hunter22");
    }
}
