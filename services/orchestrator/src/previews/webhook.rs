//! The providers' pull-request events, read into one shape, and what previews do about
//! them.
//!
//! GitHub `pull_request`: `opened` and `reopened` open, `synchronize` (new commits)
//! pushes, `closed` (merged or not) closes. GitLab `Merge Request Hook`: `open` and
//! `reopen` open, `update` pushes when the head commit moved (`oldrev`, or a
//! `last_commit` other than the one deployed), `close` and `merge` close. Other actions
//! (labels, titles, reviews) are ignored.
//!
//! Pull requests from forks are ignored: their branch is not in the blueprint's
//! repository, and a preview runs with the blueprint's variables and secrets, which
//! must not be handed to code anyone can propose.

use serde::Deserialize;

use super::lifecycle::{Ensured, Origin, PullRequest, deploys_automatically};
use super::{PreviewError, Previews, repository_key};

/// Which provider sent an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    GitLab,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GitHub => "github",
            Self::GitLab => "gitlab",
        }
    }
}

/// What happened to the pull request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Opened or reopened.
    Opened,
    /// New commits on its branch.
    Pushed,
    /// Closed or merged.
    Closed,
}

/// One pull-request event, whichever provider sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequestEvent {
    pub change: Change,
    /// Any URL of the target repository (matched by [`repository_key`]).
    pub repository_url: String,
    pub number: u64,
    pub source_branch: String,
    pub target_branch: String,
    pub web_url: String,
    /// The head commit; empty when the provider did not say.
    pub head_sha: String,
    /// Whether the source branch lives in another repository (a fork).
    pub from_fork: bool,
}

/// Why a body was not read as a pull-request event.
#[derive(Debug, thiserror::Error)]
#[error("the body is not a pull request event: {0}")]
pub struct PayloadError(#[from] serde_json::Error);

#[derive(Deserialize)]
struct GitHubEvent {
    action: String,
    pull_request: GitHubPullRequest,
    repository: GitHubRepository,
}

#[derive(Deserialize)]
struct GitHubPullRequest {
    number: u64,
    #[serde(default)]
    html_url: String,
    head: GitHubRef,
    base: GitHubRef,
}

#[derive(Deserialize)]
struct GitHubRef {
    #[serde(rename = "ref")]
    name: String,
    #[serde(default)]
    sha: String,
    /// Null when the fork was deleted.
    #[serde(default)]
    repo: Option<GitHubRepository>,
}

#[derive(Deserialize)]
struct GitHubRepository {
    #[serde(default)]
    full_name: String,
    #[serde(default)]
    html_url: String,
    #[serde(default)]
    clone_url: String,
}

/// A GitHub `pull_request` body; `None` for an action previews ignore.
pub fn github(body: &[u8]) -> Result<Option<PullRequestEvent>, PayloadError> {
    let event: GitHubEvent = serde_json::from_slice(body)?;
    let change = match event.action.as_str() {
        "opened" | "reopened" => Change::Opened,
        "synchronize" => Change::Pushed,
        "closed" => Change::Closed,
        _ => return Ok(None),
    };
    let base = event
        .pull_request
        .base
        .repo
        .as_ref()
        .map_or(event.repository.full_name.as_str(), |r| {
            r.full_name.as_str()
        });
    let from_fork = event
        .pull_request
        .head
        .repo
        .as_ref()
        .is_none_or(|head| !head.full_name.eq_ignore_ascii_case(base));
    let repository_url = if event.repository.clone_url.is_empty() {
        event.repository.html_url
    } else {
        event.repository.clone_url
    };
    Ok(Some(PullRequestEvent {
        change,
        repository_url,
        number: event.pull_request.number,
        source_branch: event.pull_request.head.name,
        target_branch: event.pull_request.base.name,
        web_url: event.pull_request.html_url,
        head_sha: event.pull_request.head.sha,
        from_fork,
    }))
}

#[derive(Deserialize)]
struct GitLabEvent {
    object_kind: String,
    project: GitLabProject,
    object_attributes: GitLabMergeRequest,
}

#[derive(Deserialize)]
struct GitLabProject {
    id: u64,
    #[serde(default)]
    web_url: String,
    #[serde(default)]
    git_http_url: String,
}

#[derive(Deserialize)]
struct GitLabMergeRequest {
    iid: u64,
    #[serde(default)]
    action: String,
    source_branch: String,
    target_branch: String,
    #[serde(default)]
    source_project_id: Option<u64>,
    #[serde(default)]
    url: String,
    #[serde(default)]
    last_commit: Option<GitLabCommit>,
}

#[derive(Deserialize)]
struct GitLabCommit {
    id: String,
}

/// A GitLab `Merge Request Hook` body; `None` for an action previews ignore. Every
/// `update` becomes [`Change::Pushed`]; whether the head really moved is decided against
/// the commit last deployed, since GitLab's `oldrev` is not sent reliably.
pub fn gitlab(body: &[u8]) -> Result<Option<PullRequestEvent>, PayloadError> {
    let event: GitLabEvent = serde_json::from_slice(body)?;
    if event.object_kind != "merge_request" {
        return Ok(None);
    }
    let attributes = event.object_attributes;
    let change = match attributes.action.as_str() {
        "open" | "reopen" => Change::Opened,
        "update" => Change::Pushed,
        "close" | "merge" => Change::Closed,
        _ => return Ok(None),
    };
    let repository_url = if event.project.git_http_url.is_empty() {
        event.project.web_url
    } else {
        event.project.git_http_url
    };
    Ok(Some(PullRequestEvent {
        change,
        repository_url,
        number: attributes.iid,
        source_branch: attributes.source_branch,
        target_branch: attributes.target_branch,
        web_url: attributes.url,
        head_sha: attributes.last_commit.map(|c| c.id).unwrap_or_default(),
        from_fork: attributes
            .source_project_id
            .is_some_and(|source| source != event.project.id),
    }))
}

/// What handling an event did, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handled {
    pub created: usize,
    pub deployed: usize,
    pub deleted: usize,
}

impl std::fmt::Display for Handled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "previews created: {}, deployments queued: {}, previews deleted: {}",
            self.created, self.deployed, self.deleted
        )
    }
}

impl Previews {
    /// Acts on a pull-request event for `organization_id`'s blueprints.
    pub async fn handle(
        &self,
        organization_id: &str,
        event: &PullRequestEvent,
    ) -> Result<Handled, PreviewError> {
        let mut handled = Handled::default();
        if event.from_fork {
            tracing::info!(
                number = event.number,
                "pull request from a fork: no preview"
            );
            return Ok(handled);
        }
        let key = repository_key(&event.repository_url);
        let origin = Origin::webhook();
        if event.change == Change::Closed {
            for row in self
                .store
                .of_pull_request(organization_id, &key, event.number)
                .await?
            {
                match &row.environment_id {
                    Some(environment_id) => {
                        self.teardown(organization_id, environment_id, "", &origin)
                            .await?;
                    }
                    // A claim whose clone never finished: nothing exists to delete.
                    None => self.store.remove(&row.id).await?,
                }
                handled.deleted += 1;
            }
            return Ok(handled);
        }
        let mut seen = Vec::new();
        for (blueprint, repository_url) in self
            .auto_blueprints(organization_id, &key, &event.target_branch)
            .await?
        {
            let pull_request = PullRequest {
                repository_url,
                number: event.number,
                source_branch: event.source_branch.clone(),
                target_branch: event.target_branch.clone(),
                web_url: event.web_url.clone(),
            };
            let automatic = deploys_automatically(&blueprint);
            seen.push(blueprint.id.clone());
            match self.ensure(&blueprint, &pull_request, None, None).await? {
                Ensured::Created(row) => {
                    handled.created += 1;
                    tracing::info!(preview = ?row.environment_id, blueprint = %blueprint.id, number = event.number, "preview created");
                    if automatic {
                        self.deploy(&row, &event.head_sha, &origin).await?;
                        handled.deployed += 1;
                    }
                }
                Ensured::Existing(row) => {
                    if automatic && self.moved(&row, event) {
                        self.deploy(&row, &event.head_sha, &origin).await?;
                        handled.deployed += 1;
                    }
                }
            }
        }
        if event.change == Change::Pushed {
            // Previews of blueprints no longer automatic (or made on demand) still
            // follow pushes when their blueprint deploys automatically.
            for row in self
                .store
                .of_pull_request(organization_id, &key, event.number)
                .await?
            {
                if seen.contains(&row.blueprint_environment_id) || !self.moved(&row, event) {
                    continue;
                }
                let blueprint = match self
                    .catalog
                    .environment(&row.blueprint_environment_id)
                    .await
                {
                    Ok(blueprint) => blueprint,
                    Err(error) if error.0.code() == tonic::Code::NotFound => continue,
                    Err(error) => return Err(error.into()),
                };
                if deploys_automatically(&blueprint) {
                    self.deploy(&row, &event.head_sha, &origin).await?;
                    handled.deployed += 1;
                }
            }
        }
        Ok(handled)
    }

    /// Whether the event brings a head commit the preview has not deployed (an unknown
    /// head counts as new, for a push).
    fn moved(&self, row: &super::store::PreviewRow, event: &PullRequestEvent) -> bool {
        if row.environment_id.is_none() {
            return false;
        }
        if event.head_sha.is_empty() {
            return event.change == Change::Pushed;
        }
        row.deployed_git_commit_sha != event.head_sha
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_actions() {
        let body = |action: &str, head_repo: &str| {
            serde_json::json!({
                "action": action,
                "number": 5,
                "pull_request": {
                    "number": 5,
                    "html_url": "https://github.com/acme/shop/pull/5",
                    "head": {"ref": "feature", "sha": "a".repeat(40), "repo": {"full_name": head_repo}},
                    "base": {"ref": "main", "sha": "b".repeat(40), "repo": {"full_name": "acme/shop"}}
                },
                "repository": {"full_name": "acme/shop", "html_url": "https://github.com/acme/shop", "clone_url": "https://github.com/acme/shop.git"}
            })
            .to_string()
        };
        let opened = github(body("opened", "acme/shop").as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(opened.change, Change::Opened);
        assert_eq!(opened.source_branch, "feature");
        assert_eq!(opened.target_branch, "main");
        assert!(!opened.from_fork);
        let pushed = github(body("synchronize", "someone/shop").as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(pushed.change, Change::Pushed);
        assert!(pushed.from_fork);
        assert!(
            github(body("labeled", "acme/shop").as_bytes())
                .unwrap()
                .is_none()
        );
        assert!(github(b"{\"zen\": \"ping\"}").is_err());
    }

    #[test]
    fn gitlab_actions() {
        let body = |action: &str| {
            serde_json::json!({
                "object_kind": "merge_request",
                "project": {"id": 9, "web_url": "https://gitlab.com/acme/shop", "git_http_url": "https://gitlab.com/acme/shop.git"},
                "object_attributes": {
                    "iid": 3, "action": action, "source_branch": "fix", "target_branch": "main",
                    "source_project_id": 9, "target_project_id": 9,
                    "url": "https://gitlab.com/acme/shop/-/merge_requests/3",
                    "last_commit": {"id": "c".repeat(40)}
                }
            })
            .to_string()
        };
        for (action, change) in [
            ("open", Some(Change::Opened)),
            ("reopen", Some(Change::Opened)),
            ("update", Some(Change::Pushed)),
            ("merge", Some(Change::Closed)),
            ("close", Some(Change::Closed)),
            ("approved", None),
        ] {
            let event = gitlab(body(action).as_bytes()).unwrap();
            assert_eq!(event.as_ref().map(|e| e.change), change, "{action}");
        }
        let event = gitlab(body("open").as_bytes()).unwrap().unwrap();
        assert_eq!(event.number, 3);
        assert_eq!(event.head_sha, "c".repeat(40));
        assert!(!event.from_fork);
    }
}
