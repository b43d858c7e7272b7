//! Fetching one commit of a repository with the git CLI.
//!
//! The git CLI rather than a library: it speaks every transport and credential helper the
//! operators' servers need, and its shallow fetch of a single commit
//! (`git fetch --depth 1 origin <sha>`) is what keeps builds of large repositories fast.
//! Every call runs without a terminal prompt and with credentials passed through the
//! environment (never on the command line, where `ps` would show them).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use base64::Engine as _;
use slipway_proto::build::v1 as build;
use tokio::process::Command;

use crate::logs::LogWriter;

/// Why the source could not be fetched; each maps to a `BuildFailureReason`.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The repository does not exist, or cannot be read with the credentials given.
    #[error("repository {url} not found or not readable: {detail}")]
    RepositoryNotFound { url: String, detail: String },
    /// The branch or tag does not exist.
    #[error("ref {reference} not found in repository {url}")]
    RefNotFound { url: String, reference: String },
    /// The repository has no such commit.
    #[error("commit {commit} not found in repository {url}")]
    CommitNotFound { url: String, commit: String },
    /// git itself failed (missing binary, full disk…).
    #[error("git {operation} failed: {detail}")]
    Git {
        operation: &'static str,
        detail: String,
    },
}

/// How git reaches the repository: the URL and the job's credentials, ready to hand to
/// each git process.
pub struct Remote {
    url: String,
    env: Vec<(String, String)>,
    /// Files holding an SSH key and known hosts; removed with the job's work directory.
    _ssh_files: Option<PathBuf>,
}

impl Remote {
    /// The remote of `url`, authenticating with `credentials`. SSH material is written
    /// (owner-only) under `scratch`.
    pub fn new(
        url: &str,
        credentials: Option<&build::GitCredentials>,
        scratch: &Path,
    ) -> Result<Self, GitError> {
        let mut env = vec![
            ("GIT_TERMINAL_PROMPT".to_owned(), "0".to_owned()),
            // The host's system-wide git configuration (credential helpers, rewrites) stays out
            // of builds: what a job may read depends on its own credentials only.
            ("GIT_CONFIG_NOSYSTEM".to_owned(), "1".to_owned()),
        ];
        let mut ssh_files = None;
        match credentials.and_then(|c| c.method.as_ref()) {
            Some(build::git_credentials::Method::Token(token)) => {
                let user = if token.username.is_empty() {
                    "x-access-token"
                } else {
                    token.username.as_str()
                };
                let basic = base64::engine::general_purpose::STANDARD
                    .encode(format!("{user}:{}", token.token));
                env.push(("GIT_CONFIG_COUNT".to_owned(), "1".to_owned()));
                env.push(("GIT_CONFIG_KEY_0".to_owned(), "http.extraHeader".to_owned()));
                env.push((
                    "GIT_CONFIG_VALUE_0".to_owned(),
                    format!("Authorization: Basic {basic}"),
                ));
            }
            Some(build::git_credentials::Method::Ssh(ssh)) => {
                let dir = scratch.join("ssh");
                write_private(&dir, "key", &ensure_newline(&ssh.private_key))?;
                let mut command = format!(
                    "ssh -i '{}' -o IdentitiesOnly=yes -o BatchMode=yes",
                    dir.join("key").display()
                );
                if ssh.known_hosts.is_empty() {
                    command.push_str(" -o StrictHostKeyChecking=yes");
                } else {
                    write_private(&dir, "known_hosts", &ensure_newline(&ssh.known_hosts))?;
                    command.push_str(&format!(
                        " -o StrictHostKeyChecking=yes -o UserKnownHostsFile='{}'",
                        dir.join("known_hosts").display()
                    ));
                }
                env.push(("GIT_SSH_COMMAND".to_owned(), command));
                ssh_files = Some(dir);
            }
            None => {}
        }
        Ok(Self {
            url: url.to_owned(),
            env,
            _ssh_files: ssh_files,
        })
    }

    /// The URL without any user information, for messages.
    pub fn display_url(&self) -> String {
        redact(&self.url)
    }

    fn git(&self) -> Command {
        let mut command = Command::new("git");
        command
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Resolves `reference` (a branch, a tag, a full `refs/…` name, or empty for the
    /// remote's default branch) to a commit; with `commit` given, only checks that the
    /// repository can be read and returns it.
    pub async fn resolve(&self, reference: &str, commit: Option<&str>) -> Result<String, GitError> {
        let output = self
            .git()
            .args(["ls-remote", "--", &self.url])
            .output()
            .await
            .map_err(|e| GitError::Git {
                operation: "ls-remote",
                detail: e.to_string(),
            })?;
        if !output.status.success() {
            return Err(GitError::RepositoryNotFound {
                url: self.display_url(),
                detail: last_line(&output.stderr),
            });
        }
        if let Some(commit) = commit {
            return Ok(commit.to_owned());
        }
        let listing = String::from_utf8_lossy(&output.stdout);
        let refs: Vec<(&str, &str)> = listing
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .map(|(sha, name)| (name.trim(), sha.trim()))
            .collect();
        let find = |name: &str| {
            refs.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, sha)| (*sha).to_owned())
        };
        let candidates: Vec<String> = if reference.is_empty() || reference == "HEAD" {
            vec!["HEAD".to_owned()]
        } else if reference.starts_with("refs/") {
            vec![format!("{reference}^{{}}"), reference.to_owned()]
        } else {
            vec![
                format!("refs/heads/{reference}"),
                format!("refs/tags/{reference}^{{}}"),
                format!("refs/tags/{reference}"),
            ]
        };
        candidates
            .iter()
            .find_map(|name| find(name))
            .ok_or_else(|| GitError::RefNotFound {
                url: self.display_url(),
                reference: if reference.is_empty() {
                    "HEAD".to_owned()
                } else {
                    reference.to_owned()
                },
            })
    }

    /// Checks `commit` out into `dir` (created): a shallow fetch of that one commit, or,
    /// when the server refuses to serve a commit by id, a fetch of every branch and tag.
    pub async fn fetch(&self, dir: &Path, commit: &str, log: &LogWriter) -> Result<(), GitError> {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| GitError::Git {
                operation: "init",
                detail: e.to_string(),
            })?;
        self.run(dir, "init", &["init", "-q"]).await?;
        self.run(dir, "remote add", &["remote", "add", "origin", &self.url])
            .await?;
        let shallow = self
            .git()
            .current_dir(dir)
            .args(["fetch", "-q", "--no-tags", "--depth", "1", "origin", commit])
            .output()
            .await
            .map_err(|e| GitError::Git {
                operation: "fetch",
                detail: e.to_string(),
            })?;
        if !shallow.status.success() {
            log.info(&format!(
                "shallow fetch of {commit} refused ({}); fetching every branch and tag",
                last_line(&shallow.stderr)
            ));
            let full = self
                .git()
                .current_dir(dir)
                .args([
                    "fetch",
                    "-q",
                    "origin",
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ])
                .output()
                .await
                .map_err(|e| GitError::Git {
                    operation: "fetch",
                    detail: e.to_string(),
                })?;
            if !full.status.success() {
                return Err(GitError::RepositoryNotFound {
                    url: self.display_url(),
                    detail: last_line(&full.stderr),
                });
            }
        }
        let exists = self
            .git()
            .current_dir(dir)
            .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
            .output()
            .await
            .map_err(|e| GitError::Git {
                operation: "cat-file",
                detail: e.to_string(),
            })?;
        if !exists.status.success() {
            return Err(GitError::CommitNotFound {
                url: self.display_url(),
                commit: commit.to_owned(),
            });
        }
        self.run(
            dir,
            "checkout",
            &[
                "-c",
                "advice.detachedHead=false",
                "checkout",
                "-q",
                "--detach",
                commit,
            ],
        )
        .await
    }

    async fn run(
        &self,
        dir: &Path,
        operation: &'static str,
        args: &[&str],
    ) -> Result<(), GitError> {
        let output = self
            .git()
            .current_dir(dir)
            .args(args)
            .output()
            .await
            .map_err(|e| GitError::Git {
                operation,
                detail: e.to_string(),
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(GitError::Git {
                operation,
                detail: last_line(&output.stderr),
            })
        }
    }
}

/// Whether `sha` is a full SHA-1 or SHA-256 commit id.
pub fn is_commit_id(sha: &str) -> bool {
    matches!(sha.len(), 40 | 64) && sha.chars().all(|c| c.is_ascii_hexdigit())
}

/// `url` without `user[:password]@` in its authority.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if let Some((_, host)) = authority.rsplit_once('@') {
            return format!("{scheme}://{host}/{path}");
        }
    }
    url.to_owned()
}

/// The last non-empty line git wrote, for a failure message (git's own words are the most
/// useful hint: "Could not resolve host", "does not appear to be a git repository").
fn last_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("no details");
    let line = line.strip_prefix("fatal: ").unwrap_or(line);
    line.chars().take(300).collect::<String>().to_lowercase()
}

fn ensure_newline(text: &str) -> String {
    if text.ends_with('\n') {
        text.to_owned()
    } else {
        format!("{text}\n")
    }
}

fn write_private(dir: &Path, name: &str, content: &str) -> Result<(), GitError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let fail = |e: std::io::Error| GitError::Git {
        operation: "credential setup",
        detail: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(dir.join(name))
        .map_err(fail)?;
    file.write_all(content.as_bytes()).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_user_information() {
        assert_eq!(
            redact("https://user:pw@github.com/acme/api"),
            "https://github.com/acme/api"
        );
        assert_eq!(redact("file:///tmp/repo"), "file:///tmp/repo");
        assert_eq!(redact("git@github.com:a/b.git"), "git@github.com:a/b.git");
    }

    #[test]
    fn commit_ids() {
        assert!(is_commit_id(&"a".repeat(40)));
        assert!(is_commit_id(&"0".repeat(64)));
        assert!(!is_commit_id("main"));
        assert!(!is_commit_id(&"g".repeat(40)));
    }
}
