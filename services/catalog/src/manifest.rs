//! The Kubernetes manifest that installs the agent of a `SELF_MANAGED` cluster, returned by
//! `ClusterService.RegisterCluster` and `GetClusterInstallManifest`
//! (`install_manifest_yaml`), for the user to `kubectl apply -f`.
//!
//! The YAML is written by hand: the documents have a fixed shape, and the only risk is a
//! value breaking out of its place. So every string value, constant or not, is emitted as
//! a double-quoted scalar by [`quoted`], which escapes `\`, `"` and every character YAML
//! does not allow raw (control characters, line breaks): whatever a cluster name or token
//! holds, it stays one scalar on one line.
//!
//! The manifest holds, in `kubectl apply` order:
//!
//! 1. the Namespace (default [`DEFAULT_NAMESPACE`]);
//! 2. the agent's ServiceAccount;
//! 3. a ClusterRole with only what deploying environments needs, and its binding;
//! 4. the ConfigMap `slipway-agent-config`: control plane address and cluster id;
//! 5. the Secret `slipway-agent-token`, only when a token is given: the token is shown once
//!    (at registration or rotation), and a manifest regenerated without it must not
//!    overwrite the Secret already in the cluster. This is also why the address lives in
//!    the ConfigMap and not in the Secret: an upgrade manifest can change it;
//! 6. the agent Deployment, reading all three through environment variables.

use std::fmt;

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Namespace the agent is installed in unless configured otherwise (the one the API
/// documents for `install_manifest_yaml`).
pub const DEFAULT_NAMESPACE: &str = "slipway-system";
/// Image repository of the agent; the tag is the control plane's version.
pub const AGENT_IMAGE_REPOSITORY: &str = "ghcr.io/slipway/agent";
/// Name of the agent's ServiceAccount, Deployment and `app.kubernetes.io/name` label.
pub const AGENT_NAME: &str = "slipway-agent";
/// Name of the Secret holding the agent token (named in the API documentation).
pub const TOKEN_SECRET_NAME: &str = "slipway-agent-token";
/// Key of the token in [`TOKEN_SECRET_NAME`].
pub const TOKEN_SECRET_KEY: &str = "token";
/// Name of the ConfigMap holding the agent's non-secret settings.
pub const CONFIG_MAP_NAME: &str = "slipway-agent-config";

/// Environment variable carrying the agent token. Agent settings follow the `libs/config`
/// convention `SLIPWAY__<SECTION>__<KEY>`, section `agent`.
pub const ENV_AGENT_TOKEN: &str = "SLIPWAY__AGENT__TOKEN";
/// Environment variable carrying the control plane (orchestrator) address.
pub const ENV_ORCHESTRATOR_URL: &str = "SLIPWAY__AGENT__ORCHESTRATOR_URL";
/// Environment variable carrying the cluster id the agent speaks for.
pub const ENV_CLUSTER_ID: &str = "SLIPWAY__AGENT__CLUSTER_ID";

/// Everything that varies between two agent manifests.
#[derive(Clone, PartialEq, Eq)]
pub struct ManifestParams {
    /// The cluster the agent speaks for.
    pub cluster_id: Uuid,
    /// Shown in an annotation for people reading `kubectl get -o yaml`.
    pub cluster_name: String,
    /// The organization owning the cluster, as a label.
    pub organization_id: Uuid,
    /// The agent token, only right after it was issued; `None` leaves the Secret out (the
    /// one already in the cluster stays).
    pub agent_token: Option<String>,
    /// Where the agent connects, `http://` or `https://`.
    pub orchestrator_url: String,
    /// Namespace to install into, a DNS label.
    pub namespace: String,
    /// Agent image reference, for example `ghcr.io/slipway/agent:1.4.2`.
    pub image: String,
}

impl ManifestParams {
    /// Params with the default namespace and the agent image matching `agent_version`
    /// (normally the control plane's own version), without a token.
    pub fn new(
        cluster_id: Uuid,
        cluster_name: impl Into<String>,
        organization_id: Uuid,
        orchestrator_url: impl Into<String>,
        agent_version: &str,
    ) -> Self {
        Self {
            cluster_id,
            cluster_name: cluster_name.into(),
            organization_id,
            agent_token: None,
            orchestrator_url: orchestrator_url.into(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            image: agent_image(agent_version),
        }
    }

    /// Embeds a freshly issued token, so the manifest carries the Secret.
    pub fn with_agent_token(mut self, token: impl Into<String>) -> Self {
        self.agent_token = Some(token.into());
        self
    }

    /// Checks what Kubernetes or the agent would otherwise reject only after `kubectl
    /// apply`. The cluster name needs no check here: it is only ever an annotation value.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if let Some(reason) = dns_label_problem(&self.namespace) {
            return Err(ManifestError::InvalidNamespace {
                namespace: self.namespace.clone(),
                reason,
            });
        }
        if let Some(reason) = url_problem(&self.orchestrator_url) {
            return Err(ManifestError::InvalidOrchestratorUrl { reason });
        }
        if self.image.is_empty() {
            return Err(ManifestError::InvalidImage { reason: "is empty" });
        }
        if self
            .image
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ManifestError::InvalidImage {
                reason: "contains whitespace or control characters",
            });
        }
        if self.agent_token.as_deref() == Some("") {
            return Err(ManifestError::EmptyAgentToken);
        }
        Ok(())
    }
}

/// `Debug` never shows the agent token.
impl fmt::Debug for ManifestParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManifestParams")
            .field("cluster_id", &self.cluster_id)
            .field("cluster_name", &self.cluster_name)
            .field("organization_id", &self.organization_id)
            .field(
                "agent_token",
                &self.agent_token.as_ref().map(|_| "<redacted>"),
            )
            .field("orchestrator_url", &self.orchestrator_url)
            .field("namespace", &self.namespace)
            .field("image", &self.image)
            .finish()
    }
}

/// Why no manifest could be generated. Messages never contain the token or the URL (which
/// may carry credentials).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("namespace {namespace:?} is not a DNS label: {reason}")]
    InvalidNamespace {
        namespace: String,
        reason: &'static str,
    },
    #[error("orchestrator url {reason}")]
    InvalidOrchestratorUrl { reason: &'static str },
    #[error("agent image {reason}")]
    InvalidImage { reason: &'static str },
    #[error("agent token is empty")]
    EmptyAgentToken,
}

impl ManifestError {
    /// The [`ManifestParams`] field at fault, for a `BadRequest` field violation.
    pub fn field(&self) -> &'static str {
        match self {
            Self::InvalidNamespace { .. } => "namespace",
            Self::InvalidOrchestratorUrl { .. } => "orchestrator_url",
            Self::InvalidImage { .. } => "image",
            Self::EmptyAgentToken => "agent_token",
        }
    }
}

/// The agent image of a given version: `ghcr.io/slipway/agent:<version>`.
pub fn agent_image(version: &str) -> String {
    format!("{AGENT_IMAGE_REPOSITORY}:{version}")
}

/// The multi-document YAML installing the agent described by `params`.
pub fn agent_manifest(params: &ManifestParams) -> Result<String, ManifestError> {
    params.validate()?;
    let namespace = quoted(&params.namespace);
    let agent = quoted(AGENT_NAME);
    // Cluster-scoped names must not collide when two Slipway installations (two
    // namespaces) share one Kubernetes cluster: the later binding would replace the
    // earlier agent's subject.
    let cluster_role = quoted(&format!("{AGENT_NAME}-{}", params.namespace));
    let labels = Labels {
        cluster_id: quoted(&params.cluster_id.to_string()),
        organization_id: quoted(&params.organization_id.to_string()),
        cluster_name: quoted(&params.cluster_name),
    };

    let mut documents = vec![
        format!(
            "# The Slipway agent of one cluster. Apply with `kubectl apply -f <this file>`.\n\
             apiVersion: \"v1\"\n\
             kind: Namespace\n\
             metadata:\n\
             \x20 name: {namespace}\n\
             {metadata}",
            metadata = labels.metadata(2),
        ),
        format!(
            "# The identity the agent uses towards the Kubernetes API.\n\
             apiVersion: \"v1\"\n\
             kind: ServiceAccount\n\
             metadata:\n\
             \x20 name: {agent}\n\
             \x20 namespace: {namespace}\n\
             {metadata}",
            metadata = labels.metadata(2),
        ),
        format!(
            "# Least privilege: only what deploying environments needs. Environments live in\n\
             # namespaces of their own, so this must be cluster-wide rather than a Role.\n\
             apiVersion: \"rbac.authorization.k8s.io/v1\"\n\
             kind: ClusterRole\n\
             metadata:\n\
             \x20 name: {cluster_role}\n\
             {metadata}\
             rules:\n\
             \x20 # Each environment gets a namespace: the agent reads and creates them. Deleting\n\
             \x20 # one is left out on purpose (it removes everything inside at once); the agent\n\
             \x20 # deletes the objects it created instead.\n\
             \x20 - apiGroups: [\"\"]\n\
             \x20   resources: [\"namespaces\"]\n\
             \x20   verbs: [\"get\", \"list\", \"create\"]\n\
             \x20 # Containers and applications run as Deployments, container-mode databases as\n\
             \x20 # StatefulSets. The agent applies them server-side (patch), watches rollouts and\n\
             \x20 # deletes them when a service or environment goes away.\n\
             \x20 - apiGroups: [\"apps\"]\n\
             \x20   resources: [\"deployments\", \"statefulsets\"]\n\
             \x20   verbs: {workload_verbs}\n\
             \x20 # Services expose ports; ConfigMaps and Secrets carry variables, file variables\n\
             \x20 # and secrets; PersistentVolumeClaims hold database storage. Same lifecycle.\n\
             \x20 - apiGroups: [\"\"]\n\
             \x20   resources: [\"services\", \"configmaps\", \"secrets\", \"persistentvolumeclaims\"]\n\
             \x20   verbs: {workload_verbs}\n\
             \x20 # Lifecycle jobs run as Jobs, cron jobs as CronJobs.\n\
             \x20 - apiGroups: [\"batch\"]\n\
             \x20   resources: [\"jobs\", \"cronjobs\"]\n\
             \x20   verbs: {workload_verbs}\n\
             \x20 # Public ports and custom domains become Ingresses.\n\
             \x20 - apiGroups: [\"networking.k8s.io\"]\n\
             \x20   resources: [\"ingresses\"]\n\
             \x20   verbs: {workload_verbs}\n\
             \x20 # Pods are never written directly: the agent only reads them for runtime state\n\
             \x20 # and streams their logs back.\n\
             \x20 - apiGroups: [\"\"]\n\
             \x20   resources: [\"pods\", \"pods/log\"]\n\
             \x20   verbs: [\"get\", \"list\", \"watch\"]\n\
             \x20 # Events explain failed rollouts (image pull errors, unschedulable pods).\n\
             \x20 - apiGroups: [\"\"]\n\
             \x20   resources: [\"events\"]\n\
             \x20   verbs: [\"list\", \"watch\"]\n",
            metadata = labels.metadata(2),
            workload_verbs =
                "[\"get\", \"list\", \"watch\", \"create\", \"update\", \"patch\", \"delete\"]",
        ),
        format!(
            "# Grants the ClusterRole above to the agent's ServiceAccount only.\n\
             apiVersion: \"rbac.authorization.k8s.io/v1\"\n\
             kind: ClusterRoleBinding\n\
             metadata:\n\
             \x20 name: {cluster_role}\n\
             {metadata}\
             roleRef:\n\
             \x20 apiGroup: \"rbac.authorization.k8s.io\"\n\
             \x20 kind: \"ClusterRole\"\n\
             \x20 name: {cluster_role}\n\
             subjects:\n\
             \x20 - kind: \"ServiceAccount\"\n\
             \x20   name: {agent}\n\
             \x20   namespace: {namespace}\n",
            metadata = labels.metadata(2),
        ),
        format!(
            "# The agent's settings that are not secret.\n\
             apiVersion: \"v1\"\n\
             kind: ConfigMap\n\
             metadata:\n\
             \x20 name: {config_map}\n\
             \x20 namespace: {namespace}\n\
             {metadata}\
             data:\n\
             \x20 orchestrator-url: {url}\n\
             \x20 cluster-id: {cluster_id}\n",
            config_map = quoted(CONFIG_MAP_NAME),
            metadata = labels.metadata(2),
            url = quoted(&params.orchestrator_url),
            cluster_id = labels.cluster_id,
        ),
    ];
    if let Some(token) = &params.agent_token {
        documents.push(format!(
            "# The agent token, shown once: keep this file private. Manifests generated later\n\
             # leave this Secret out, so applying them keeps the token already here.\n\
             apiVersion: \"v1\"\n\
             kind: Secret\n\
             metadata:\n\
             \x20 name: {secret}\n\
             \x20 namespace: {namespace}\n\
             {metadata}\
             type: \"Opaque\"\n\
             stringData:\n\
             \x20 {key}: {token}\n",
            secret = quoted(TOKEN_SECRET_NAME),
            metadata = labels.metadata(2),
            key = TOKEN_SECRET_KEY,
            token = quoted(token),
        ));
    }
    documents.push(format!(
        "# The agent itself.\n\
         apiVersion: \"apps/v1\"\n\
         kind: Deployment\n\
         metadata:\n\
         \x20 name: {agent}\n\
         \x20 namespace: {namespace}\n\
         {metadata}\
         spec:\n\
         \x20 # One agent holds the cluster's single stream to the orchestrator.\n\
         \x20 replicas: 1\n\
         \x20 # A rolling update would briefly run two agents competing for that stream.\n\
         \x20 strategy:\n\
         \x20   type: \"Recreate\"\n\
         \x20 selector:\n\
         \x20   matchLabels:\n\
         \x20     app.kubernetes.io/name: {agent}\n\
         \x20     slipway.dev/cluster-id: {cluster_id}\n\
         \x20 template:\n\
         \x20   metadata:\n\
         {pod_labels}\
         \x20     annotations:\n\
         \x20       # Environment variables are read at start: a changed address or token\n\
         \x20       # changes this value, so re-applying the manifest restarts the agent.\n\
         \x20       slipway.dev/config-hash: {config_hash}\n\
         \x20   spec:\n\
         \x20     serviceAccountName: {agent}\n\
         \x20     # The agent calls the Kubernetes API with this account's token.\n\
         \x20     automountServiceAccountToken: true\n\
         \x20     securityContext:\n\
         \x20       runAsNonRoot: true\n\
         \x20       runAsUser: 65532\n\
         \x20       runAsGroup: 65532\n\
         \x20       seccompProfile:\n\
         \x20         type: \"RuntimeDefault\"\n\
         \x20     containers:\n\
         \x20       - name: \"agent\"\n\
         \x20         image: {image}\n\
         \x20         imagePullPolicy: \"IfNotPresent\"\n\
         \x20         env:\n\
         \x20           - name: {env_token}\n\
         \x20             valueFrom:\n\
         \x20               secretKeyRef:\n\
         \x20                 name: {secret}\n\
         \x20                 key: {secret_key}\n\
         \x20           - name: {env_url}\n\
         \x20             valueFrom:\n\
         \x20               configMapKeyRef:\n\
         \x20                 name: {config_map}\n\
         \x20                 key: \"orchestrator-url\"\n\
         \x20           - name: {env_cluster}\n\
         \x20             valueFrom:\n\
         \x20               configMapKeyRef:\n\
         \x20                 name: {config_map}\n\
         \x20                 key: \"cluster-id\"\n\
         \x20         securityContext:\n\
         \x20           allowPrivilegeEscalation: false\n\
         \x20           readOnlyRootFilesystem: true\n\
         \x20           capabilities:\n\
         \x20             drop: [\"ALL\"]\n\
         \x20         resources:\n\
         \x20           requests:\n\
         \x20             cpu: \"50m\"\n\
         \x20             memory: \"64Mi\"\n\
         \x20           limits:\n\
         \x20             cpu: \"500m\"\n\
         \x20             memory: \"256Mi\"\n\
         \x20         # The root filesystem is read-only; scratch space (for example Helm charts\n\
         \x20         # being installed) goes here.\n\
         \x20         volumeMounts:\n\
         \x20           - name: \"tmp\"\n\
         \x20             mountPath: \"/tmp\"\n\
         \x20     volumes:\n\
         \x20       - name: \"tmp\"\n\
         \x20         emptyDir: {{}}\n",
        metadata = labels.metadata(2),
        pod_labels = labels.labels(6),
        cluster_id = labels.cluster_id,
        config_hash = quoted(&config_hash(params)),
        image = quoted(&params.image),
        env_token = quoted(ENV_AGENT_TOKEN),
        env_url = quoted(ENV_ORCHESTRATOR_URL),
        env_cluster = quoted(ENV_CLUSTER_ID),
        secret = quoted(TOKEN_SECRET_NAME),
        secret_key = quoted(TOKEN_SECRET_KEY),
        config_map = quoted(CONFIG_MAP_NAME),
    ));
    Ok(documents.join("---\n"))
}

/// The labels and annotation every object carries, already quoted.
struct Labels {
    cluster_id: String,
    organization_id: String,
    cluster_name: String,
}

impl Labels {
    /// `labels:` at `indent` spaces. Label values are limited to 63 safe characters, so
    /// only ids and fixed names are labels.
    fn labels(&self, indent: usize) -> String {
        let pad = " ".repeat(indent);
        format!(
            "{pad}labels:\n\
             {pad}  app.kubernetes.io/name: {name}\n\
             {pad}  app.kubernetes.io/managed-by: \"slipway\"\n\
             {pad}  slipway.dev/cluster-id: {cluster_id}\n\
             {pad}  slipway.dev/organization-id: {organization_id}\n",
            name = quoted(AGENT_NAME),
            cluster_id = self.cluster_id,
            organization_id = self.organization_id,
        )
    }

    /// `labels:` then `annotations:` (the cluster name, which may be any text).
    fn metadata(&self, indent: usize) -> String {
        let pad = " ".repeat(indent);
        format!(
            "{labels}{pad}annotations:\n{pad}  slipway.dev/cluster-name: {name}\n",
            labels = self.labels(indent),
            name = self.cluster_name,
        )
    }
}

/// A short digest of what the agent reads from its environment. It includes the token so
/// that applying a rotated one restarts the agent; 64 bits of a SHA-256 reveal nothing
/// usable about a random token.
fn config_hash(params: &ManifestParams) -> String {
    let mut hasher = Sha256::new();
    for part in [
        params.orchestrator_url.as_str(),
        &params.cluster_id.to_string(),
        params.agent_token.as_deref().unwrap_or(""),
    ] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// `value` as a YAML double-quoted scalar that stays on one line: `"` and `\` are
/// escaped, and so is every character YAML does not allow raw or would fold (control
/// characters, line breaks including NEL, LS and PS, the byte-order mark). The escapes
/// are those of YAML 1.1 and 1.2, which Kubernetes' parser reads.
pub fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{0b}' => out.push_str("\\v"),
            '\u{0c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            '\u{1b}' => out.push_str("\\e"),
            '\u{85}' => out.push_str("\\N"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if allowed_raw(c) => out.push(c),
            c if u32::from(c) <= 0xff => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push_str(&format!("\\u{:04x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

/// YAML's printable characters, minus the ones handled above and the byte-order mark.
/// Everything outside is in the BMP, so `\u` covers it.
fn allowed_raw(c: char) -> bool {
    matches!(
        u32::from(c),
        0x20..=0x7e | 0xa0..=0xd7ff | 0xe000..=0xfefe | 0xff00..=0xfffd | 0x10000..=0x10ffff
    )
}

/// Kubernetes' RFC 1123 label rule for namespace names.
fn dns_label_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > 63 {
        Some("is longer than 63 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("may only hold lowercase letters, digits and '-'")
    } else if name.starts_with('-') || name.ends_with('-') {
        Some("must start and end with a letter or digit")
    } else {
        None
    }
}

/// The agent dials the orchestrator over gRPC, so only `http(s)://host…` will work.
pub(crate) fn url_problem(url: &str) -> Option<&'static str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    if url.is_empty() {
        Some("is empty")
    } else if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains whitespace or control characters")
    } else if rest.is_none_or(|rest| rest.is_empty() || rest.starts_with('/')) {
        Some("must be http:// or https:// followed by a host")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TOKEN: &str = "swa_7f3c9e1b2d4a6f8e0c1b3d5f7a9e2c4b";

    fn params() -> ManifestParams {
        ManifestParams::new(
            Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
            "production-eu",
            Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002),
            "https://slipway.example.com:443",
            "1.4.2",
        )
        .with_agent_token(TOKEN)
    }

    fn documents(yaml: &str) -> Vec<&str> {
        yaml.split("---\n").collect()
    }

    /// The document of `kind`, found by its `kind:` line.
    fn document<'a>(yaml: &'a str, kind: &str) -> &'a str {
        let line = format!("\nkind: {kind}\n");
        let mut found = documents(yaml)
            .into_iter()
            .filter(|doc| doc.contains(&line));
        let doc = found
            .next()
            .unwrap_or_else(|| panic!("no {kind} in\n{yaml}"));
        assert!(found.next().is_none(), "two {kind} documents");
        doc
    }

    /// Reads back a double-quoted scalar starting at the front of `text`: the value and
    /// what follows the closing quote. Handles exactly the escapes [`quoted`] writes.
    fn unquote(text: &str) -> Option<(String, &str)> {
        let mut chars = text.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        while let Some((_, c)) = chars.next() {
            match c {
                '"' => {
                    let rest = chars.as_str();
                    return Some((value, rest));
                }
                '\\' => {
                    let (_, escape) = chars.next()?;
                    let hex_digits = match escape {
                        'x' => 2,
                        'u' => 4,
                        _ => 0,
                    };
                    if hex_digits > 0 {
                        let digits: String = (0..hex_digits)
                            .map(|_| chars.next().map(|(_, d)| d))
                            .collect::<Option<_>>()?;
                        value.push(char::from_u32(u32::from_str_radix(&digits, 16).ok()?)?);
                        continue;
                    }
                    value.push(match escape {
                        '"' => '"',
                        '\\' => '\\',
                        '0' => '\0',
                        'a' => '\u{07}',
                        'b' => '\u{08}',
                        't' => '\t',
                        'n' => '\n',
                        'v' => '\u{0b}',
                        'f' => '\u{0c}',
                        'r' => '\r',
                        'e' => '\u{1b}',
                        'N' => '\u{85}',
                        'L' => '\u{2028}',
                        'P' => '\u{2029}',
                        _ => return None,
                    });
                }
                c => value.push(c),
            }
        }
        None
    }

    #[test]
    fn holds_every_kind_in_apply_order_separated_by_document_markers() {
        let yaml = agent_manifest(&params()).unwrap();
        let kinds: Vec<&str> = documents(&yaml)
            .iter()
            .map(|doc| {
                doc.lines()
                    .find_map(|line| line.strip_prefix("kind: "))
                    .unwrap()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "ConfigMap",
                "Secret",
                "Deployment"
            ]
        );
        assert!(yaml.ends_with('\n'));
        assert_eq!(yaml.matches("\n---\n").count(), 6);
        for doc in documents(&yaml) {
            assert!(!doc.trim().is_empty());
            assert!(doc.contains("\napiVersion: \""), "{doc}");
        }
    }

    #[test]
    fn the_token_appears_exactly_once_in_the_secret_as_string_data() {
        let yaml = agent_manifest(&params()).unwrap();
        assert_eq!(yaml.matches(TOKEN).count(), 1);
        let secret = document(&yaml, "Secret");
        assert!(secret.contains(&format!("stringData:\n  token: \"{TOKEN}\"\n")));
        assert!(secret.contains("  name: \"slipway-agent-token\"\n"));
        assert!(secret.contains("  namespace: \"slipway-system\"\n"));
        assert!(!format!("{:?}", params()).contains(TOKEN));
    }

    #[test]
    fn without_a_token_the_secret_is_left_out_but_still_referenced() {
        let mut params = params();
        params.agent_token = None;
        let yaml = agent_manifest(&params).unwrap();
        assert!(!yaml.contains("\nkind: Secret\n"));
        assert_eq!(documents(&yaml).len(), 6);
        assert!(document(&yaml, "Deployment").contains("name: \"slipway-agent-token\""));
    }

    #[test]
    fn the_deployment_runs_one_locked_down_agent_configured_from_its_secret_and_config() {
        let mut params = params();
        params.namespace = "agents".to_owned();
        params.image = "registry.internal/slipway/agent:1.5.0".to_owned();
        let yaml = agent_manifest(&params).unwrap();
        let deployment = document(&yaml, "Deployment");
        for expected in [
            "  namespace: \"agents\"\n",
            "  replicas: 1\n",
            "image: \"registry.internal/slipway/agent:1.5.0\"\n",
            "runAsNonRoot: true\n",
            "readOnlyRootFilesystem: true\n",
            "allowPrivilegeEscalation: false\n",
            "serviceAccountName: \"slipway-agent\"\n",
            "- name: \"SLIPWAY__AGENT__TOKEN\"\n",
            "- name: \"SLIPWAY__AGENT__ORCHESTRATOR_URL\"\n",
            "- name: \"SLIPWAY__AGENT__CLUSTER_ID\"\n",
            "requests:\n",
            "limits:\n",
        ] {
            assert!(
                deployment.contains(expected),
                "missing {expected:?} in\n{deployment}"
            );
        }
        let config = document(&yaml, "ConfigMap");
        assert!(config.contains("orchestrator-url: \"https://slipway.example.com:443\"\n"));
        assert!(config.contains("cluster-id: \"01900000-0000-7000-8000-000000000001\"\n"));
        let binding = document(&yaml, "ClusterRoleBinding");
        assert!(binding.contains("    namespace: \"agents\"\n"));
        assert!(binding.contains("  name: \"slipway-agent-agents\"\n"));
        assert_eq!(
            ManifestParams::new(Uuid::nil(), "", Uuid::nil(), "http://x", "2.0.0").image,
            "ghcr.io/slipway/agent:2.0.0"
        );
    }

    #[test]
    fn every_object_carries_the_slipway_labels() {
        let yaml = agent_manifest(&params()).unwrap();
        for doc in documents(&yaml) {
            for label in [
                "app.kubernetes.io/name: \"slipway-agent\"\n",
                "app.kubernetes.io/managed-by: \"slipway\"\n",
                "slipway.dev/cluster-id: \"01900000-0000-7000-8000-000000000001\"\n",
                "slipway.dev/organization-id: \"01900000-0000-7000-8000-000000000002\"\n",
                "slipway.dev/cluster-name: \"production-eu\"\n",
            ] {
                assert!(doc.contains(label), "missing {label:?} in\n{doc}");
            }
        }
    }

    #[test]
    fn the_cluster_role_grants_no_more_than_deploying_needs() {
        let yaml = agent_manifest(&params()).unwrap();
        let role = document(&yaml, "ClusterRole");
        let verbs: Vec<&str> = role
            .lines()
            .filter_map(|line| line.trim().strip_prefix("verbs: "))
            .collect();
        assert_eq!(verbs.len(), 7);
        assert!(!role.contains('*'), "no wildcards");
        assert!(
            role.contains(
                "resources: [\"namespaces\"]\n    verbs: [\"get\", \"list\", \"create\"]"
            )
        );
        assert!(role.contains(
            "resources: [\"pods\", \"pods/log\"]\n    verbs: [\"get\", \"list\", \"watch\"]"
        ));
        assert!(role.contains("resources: [\"events\"]\n    verbs: [\"list\", \"watch\"]"));
        for resource in [
            "nodes",
            "clusterroles",
            "escalate",
            "bind",
            "impersonate",
            "pods/exec",
        ] {
            assert!(!role.contains(resource), "{resource}");
        }
    }

    #[test]
    fn a_hostile_value_stays_inside_its_scalar() {
        let hostile = "evil\" \nkind: Secret\n: x\\\"\r\t\u{1b}\u{85}\u{2028}#é";
        let mut params = params();
        params.cluster_name = hostile.to_owned();
        params.agent_token = Some(format!("{hostile}-token"));
        params.image = "ghcr.io/x\"y:1".to_owned();
        let yaml = agent_manifest(&params).unwrap();

        let escaped = r#""evil\" \nkind: Secret\n: x\\\"\r\t\e\N\L#é""#;
        assert_eq!(quoted(hostile), escaped);
        assert!(yaml.contains(&format!("slipway.dev/cluster-name: {escaped}\n")));
        assert!(yaml.contains(r#"image: "ghcr.io/x\"y:1""#));
        assert!(yaml.contains(r#"  token: "evil\" \nkind: Secret\n: x\\\"\r\t\e\N\L#é-token""#));

        // Structure is unchanged: still one `kind:` line per document, no stray lines.
        assert_eq!(yaml.lines().filter(|l| l.starts_with("kind:")).count(), 7);
        assert_eq!(
            yaml.lines()
                .filter(|l| l.trim_start().starts_with("kind: Secret"))
                .count(),
            1,
            "{yaml}"
        );
        // Every line holding the hostile value reads back to exactly it.
        let mut seen = 0;
        for line in yaml.lines().filter(|l| l.contains("evil")) {
            let (_, value) = line.split_once(": ").unwrap();
            let (read, rest) = unquote(value).unwrap();
            assert!(
                read == hostile || read == format!("{hostile}-token"),
                "{line}"
            );
            assert_eq!(rest, "");
            seen += 1;
        }
        assert_eq!(seen, 8, "7 annotations and the token");
    }

    #[test]
    fn refuses_bad_params_with_the_field_at_fault() {
        type Mutation = fn(&mut ManifestParams);
        let cases: Vec<(Mutation, &str)> = vec![
            (|p| p.namespace = String::new(), "namespace"),
            (|p| p.namespace = "Slipway".to_owned(), "namespace"),
            (|p| p.namespace = "-agents".to_owned(), "namespace"),
            (|p| p.namespace = "agents-".to_owned(), "namespace"),
            (|p| p.namespace = "a\"b".to_owned(), "namespace"),
            (|p| p.namespace = "a".repeat(64), "namespace"),
            (|p| p.orchestrator_url = String::new(), "orchestrator_url"),
            (
                |p| p.orchestrator_url = "slipway.example.com".to_owned(),
                "orchestrator_url",
            ),
            (
                |p| p.orchestrator_url = "https://".to_owned(),
                "orchestrator_url",
            ),
            (
                |p| p.orchestrator_url = "https://a\nb".to_owned(),
                "orchestrator_url",
            ),
            (|p| p.image = String::new(), "image"),
            (|p| p.image = "a b".to_owned(), "image"),
            (|p| p.agent_token = Some(String::new()), "agent_token"),
        ];
        for (mutate, field) in cases {
            let mut params = params();
            mutate(&mut params);
            let error = agent_manifest(&params).unwrap_err();
            assert_eq!(error.field(), field, "{params:?}: {error}");
            assert!(!error.to_string().contains(TOKEN));
        }
        let mut params = params();
        params.namespace = "a".repeat(63);
        params.orchestrator_url = "http://10.0.0.1:50051".to_owned();
        assert!(agent_manifest(&params).is_ok());
    }

    #[test]
    fn the_config_hash_follows_address_and_token() {
        let hash = |p: &ManifestParams| config_hash(p);
        let base = params();
        let mut moved = params();
        moved.orchestrator_url = "https://elsewhere.example.com".to_owned();
        let rotated = params().with_agent_token("swa_other");
        assert_eq!(hash(&base), hash(&params()));
        assert_ne!(hash(&base), hash(&moved));
        assert_ne!(hash(&base), hash(&rotated));
        assert_eq!(hash(&base).len(), 16);
    }

    proptest! {
        #[test]
        fn quoted_is_one_line_and_reads_back(value in any::<String>()) {
            let quoted = quoted(&value);
            let raw_break_or_control = quoted
                .chars()
                .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}'));
            prop_assert!(!raw_break_or_control, "{}", quoted);
            let (read, rest) = unquote(&quoted).unwrap();
            prop_assert_eq!(read, value);
            prop_assert_eq!(rest, "");
        }
    }
}
