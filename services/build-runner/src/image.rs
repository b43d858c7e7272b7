//! Image builds: the registry cache lookup, the checkout, the Dockerfile, the builder
//! (`buildah` or `buildkit`), the push, and the cache tag.
//!
//! The image cache lives in the target repository itself: every image the runner pushes
//! is also tagged `slipway-cache-<cache key>`. A job whose key already has that tag is not
//! built: its manifest is put under the job's tag, and its digest reported. So every runner
//! sharing a registry shares the cache, and deleting the tag is how an operator drops an
//! entry.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use slipway_proto::build::v1 as build;
use tokio::process::Command;

use crate::buildah::Buildah;
use crate::builder::{self, StepError, Watch};
use crate::git::Remote;
use crate::logs::LogWriter;
use crate::registry::{Registry, RegistryError};
use crate::worker::{Artifact, Context, Failure, Progress, Success};

/// The image builders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageBuilder {
    Buildah,
    Buildkit,
}

impl ImageBuilder {
    pub fn name(self) -> &'static str {
        match self {
            Self::Buildah => "buildah",
            Self::Buildkit => "buildkit",
        }
    }
}

/// The tag under which the image of cache key `key` is kept in the target repository.
pub fn cache_tag(key: &str) -> String {
    format!("slipway-cache-{key}")
}

impl From<RegistryError> for Failure {
    fn from(error: RegistryError) -> Self {
        Failure::failed(build::BuildFailureReason::RegistryError, error.to_string())
    }
}

/// What an image job needs before anything is fetched: the registry, and the builder's
/// program. Checked first, so a runner that cannot build images says so at once.
pub(crate) async fn check(
    context: &Context,
    job: &build::BuildJob,
    builder: ImageBuilder,
) -> Result<(Registry, String), Failure> {
    let Some(target) = job.registry.as_ref() else {
        return Err(Failure::failed(
            build::BuildFailureReason::Internal,
            format!(
                "builder {} needs a registry to push to: set a build registry on the environment's cluster",
                builder.name()
            ),
        ));
    };
    let registry = Registry::new(target)?;
    let tag = target.tag.trim().to_owned();
    if !tag.is_empty() && !valid_tag(&tag) {
        return Err(Failure::failed(
            build::BuildFailureReason::Internal,
            "the build job is invalid: its image tag must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'",
        ));
    }
    match builder {
        ImageBuilder::Buildah => {
            if !Buildah::new(&context.settings).installed().await {
                return Err(not_installed("buildah", "buildah"));
            }
        }
        ImageBuilder::Buildkit => {
            let found = Command::new(&context.settings.buildctl)
                .arg("--version")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success());
            if !found {
                return Err(not_installed("buildkit", "buildctl"));
            }
        }
    }
    Ok((registry, tag))
}

fn not_installed(builder: &str, program: &str) -> Failure {
    Failure::failed(
        build::BuildFailureReason::Internal,
        format!(
            "builder {builder} needs {program}, which is not installed on this build runner; \
             install it there or choose another builder"
        ),
    )
}

fn valid_tag(tag: &str) -> bool {
    tag.len() <= 128
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
}

/// Everything an image build has to hand once the commit and key are known.
pub(crate) struct ImageJob<'a> {
    pub(crate) context: &'a Context,
    pub(crate) job: &'a build::BuildJob,
    pub(crate) log: &'a LogWriter,
    pub(crate) progress: &'a Mutex<Progress>,
    pub(crate) scratch: &'a Path,
    pub(crate) remote: &'a Remote,
    pub(crate) commit: &'a str,
    pub(crate) key: &'a str,
    pub(crate) registry: Registry,
    pub(crate) tag: String,
    pub(crate) builder: ImageBuilder,
}

/// Runs an image job from the cache lookup to the pushed, cache-tagged image.
pub(crate) async fn build(job: ImageJob<'_>) -> Result<Success, Failure> {
    let ImageJob {
        context,
        job,
        log,
        progress,
        scratch,
        remote,
        commit,
        key,
        registry,
        tag,
        builder,
    } = job;
    let tag = if tag.is_empty() {
        commit.to_owned()
    } else {
        tag
    };
    let reference = registry.reference(&tag);
    let cache_tag = cache_tag(key);
    let skip_lookup = job.cache.as_ref().is_some_and(|c| c.skip_lookup);
    if !skip_lookup {
        let started = Instant::now();
        if let Some(cached) = registry.manifest(&cache_tag).await? {
            log.info(&format!(
                "cache hit: commit {commit} was already built with these settings (cache key {key}); \
                 tagging image {} as {reference}",
                cached.digest
            ));
            context.phase(job, build::BuildStatus::Pushing).await;
            let digest = registry.put_manifest(&tag, &cached).await?;
            if let Ok(mut progress) = progress.lock() {
                progress.push = Some(started.elapsed());
            }
            return Ok(Success {
                artifact: Artifact::Image { reference, digest },
                cache_hit: true,
            });
        }
        log.info(&format!(
            "no image for cache key {key} in {}: building",
            registry.reference(&cache_tag)
        ));
    }

    let fetch_started = Instant::now();
    log.info(&format!(
        "fetching commit {commit} of {}",
        remote.display_url()
    ));
    let checkout = scratch.join("checkout");
    remote.fetch(&checkout, commit, log).await?;
    let fetched = fetch_started.elapsed();
    if let Ok(mut progress) = progress.lock() {
        progress.fetch = Some(fetched);
    }
    log.info(&format!(
        "fetched commit {commit} in {} ms",
        fetched.as_millis()
    ));

    let source = job.source.clone().unwrap_or_default();
    let root = checkout.join(&source.root_path);
    let dockerfile_path = if job.dockerfile_path.is_empty() {
        "Dockerfile"
    } else {
        job.dockerfile_path.as_str()
    };
    let dockerfile = root.join(dockerfile_path);
    if !tokio::fs::metadata(&dockerfile)
        .await
        .is_ok_and(|m| m.is_file())
    {
        return Err(Failure::failed(
            build::BuildFailureReason::DockerfileMissing,
            format!(
                "no dockerfile at {:?} in commit {commit}",
                Path::new(&source.root_path).join(dockerfile_path)
            ),
        ));
    }

    let auth = write_auth(scratch, &registry).await?;
    context.phase(job, build::BuildStatus::Building).await;
    let build_started = Instant::now();
    let steps = Arc::new(Mutex::new(Steps::default()));
    let digest = match builder {
        ImageBuilder::Buildah => {
            let buildah = Buildah::new(&context.settings);
            buildah.prepare().await.map_err(|e| {
                Failure::failed(
                    build::BuildFailureReason::Internal,
                    format!("cannot write buildah's configuration: {e}"),
                )
            })?;
            let image = buildah_bud(
                &buildah,
                job,
                &root,
                &dockerfile,
                scratch,
                log,
                Arc::clone(&steps),
            )
            .await?;
            let built = build_started.elapsed();
            if let Ok(mut progress) = progress.lock() {
                progress.build = Some(built);
            }
            log.info(&format!(
                "built image {image} in {} ms; pushing {reference}",
                built.as_millis()
            ));
            context.phase(job, build::BuildStatus::Pushing).await;
            let push_started = Instant::now();
            let pushed =
                buildah_push(&buildah, &registry, &image, &reference, &auth, scratch, log).await;
            // The image lives on in the registry; the runner's storage keeps only bases.
            let mut rmi = buildah.command();
            rmi.args(["rmi", "-f", &image])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            let _ = rmi.status().await;
            let digest = pushed?;
            if let Ok(mut progress) = progress.lock() {
                progress.push = Some(push_started.elapsed());
            }
            digest
        }
        ImageBuilder::Buildkit => {
            let digest = buildctl_build(
                context,
                job,
                &root,
                &dockerfile,
                &registry,
                &reference,
                &auth,
                scratch,
                log,
                Arc::clone(&steps),
            )
            .await?;
            if let Ok(mut progress) = progress.lock() {
                progress.build = Some(build_started.elapsed());
            }
            digest
        }
    };

    // The manifest as the registry serves it: its digest is what deployments pull.
    let Some(pushed) = registry.manifest(&digest).await? else {
        return Err(Failure::failed(
            build::BuildFailureReason::RegistryError,
            format!(
                "registry {} does not serve the image just pushed ({digest})",
                registry.host()
            ),
        ));
    };
    match registry.put_manifest(&cache_tag, &pushed).await {
        Ok(_) => log.info(&format!("pushed {reference} ({digest}), cached under {cache_tag}")),
        Err(error) => log.info(&format!(
            "pushed {reference} ({digest}); the cache tag was not stored ({error}), so the next build of this commit builds again"
        )),
    }
    Ok(Success {
        artifact: Artifact::Image { reference, digest },
        cache_hit: false,
    })
}

/// The Dockerfile step a build is in, and the tool's last error line, from its output.
#[derive(Default)]
struct Steps {
    /// (index, count, instruction) of the step running.
    current: Option<(u32, u32, String)>,
    error: Option<String>,
}

impl Steps {
    fn watch(steps: Arc<Mutex<Self>>, parse: fn(&str) -> Option<(u32, u32, String)>) -> Watch {
        Arc::new(move |line: &str| {
            let Ok(mut steps) = steps.lock() else {
                return;
            };
            if let Some(step) = parse(line) {
                steps.current = Some(step);
            } else if let Some(error) = error_line(line) {
                steps.error = Some(error);
            }
        })
    }

    /// The failure of the step that was running when the tool failed with `error`.
    fn failure(&self, error: &StepError) -> Failure {
        let detail = self.error.clone().unwrap_or_else(|| error.to_string());
        let (step, message) = match &self.current {
            Some((index, count, instruction)) => (
                *index,
                format!("step {index}/{count} {instruction:?} failed: {detail}"),
            ),
            None => (0, format!("the image build failed: {detail}")),
        };
        Failure {
            step,
            ..Failure::failed(build::BuildFailureReason::StepFailed, message)
        }
    }
}

/// Buildah's `STEP 3/5: RUN make` lines.
fn buildah_step(line: &str) -> Option<(u32, u32, String)> {
    let rest = line.strip_prefix("STEP ")?;
    let (numbers, instruction) = rest.split_once(':')?;
    let (index, count) = numbers.split_once('/')?;
    Some((
        index.trim().parse().ok()?,
        count.trim().parse().ok()?,
        shorten(instruction.trim()),
    ))
}

/// BuildKit's plain progress lines: `#7 [2/3] RUN make` or `#7 [build 2/3] RUN make`.
fn buildkit_step(line: &str) -> Option<(u32, u32, String)> {
    let rest = line.strip_prefix('#')?;
    let (_, rest) = rest.split_once(" [")?;
    let (inside, instruction) = rest.split_once("] ")?;
    let numbers = inside.rsplit(' ').next()?;
    let (index, count) = numbers.split_once('/')?;
    Some((
        index.parse().ok()?,
        count.parse().ok()?,
        shorten(instruction.trim()),
    ))
}

fn error_line(line: &str) -> Option<String> {
    let lower = line.trim().to_lowercase();
    let rest = lower
        .strip_prefix("error: ")
        .or_else(|| lower.strip_prefix("error "))?;
    Some(rest.chars().take(400).collect())
}

fn shorten(text: &str) -> String {
    if text.chars().count() > 120 {
        format!("{}…", text.chars().take(120).collect::<String>())
    } else {
        text.to_owned()
    }
}

/// The job's registry credentials in the `auth.json` / `config.json` form both builders
/// read, owner-only under the job's scratch directory; `None` without credentials.
async fn write_auth(scratch: &Path, registry: &Registry) -> Result<Option<PathBuf>, Failure> {
    let Some(basic) = registry.basic_auth() else {
        return Ok(None);
    };
    let content = serde_json::json!({ "auths": { registry.host(): { "auth": basic } } });
    let dir = scratch.join("registry-auth");
    let internal = |e: std::io::Error| {
        Failure::failed(
            build::BuildFailureReason::Internal,
            format!("cannot write the registry credentials for the builder: {e}"),
        )
    };
    tokio::fs::create_dir_all(&dir).await.map_err(internal)?;
    let path = dir.join("config.json");
    let text = content.to_string();
    let file = path.clone();
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&file)?;
        out.write_all(text.as_bytes())
    })
    .await
    .map_err(|e| internal(std::io::Error::other(e)))?
    .map_err(internal)?;
    Ok(Some(path))
}

/// `buildah bud`: the image in the runner's storage; returns its id.
async fn buildah_bud(
    buildah: &Buildah,
    job: &build::BuildJob,
    root: &Path,
    dockerfile: &Path,
    scratch: &Path,
    log: &LogWriter,
    steps: Arc<Mutex<Steps>>,
) -> Result<String, Failure> {
    let iid = scratch.join("image-id");
    let mut command = buildah.command();
    command
        .arg("bud")
        .arg("--signature-policy")
        .arg(buildah.policy())
        // A base image already in storage is used as it is: nothing is pulled then.
        .args([
            "--pull=false",
            "--layers=false",
            "--format=oci",
            "--isolation=oci",
        ])
        .arg("--iidfile")
        .arg(&iid)
        .arg("--file")
        .arg(dockerfile);
    if !job.platform.is_empty() {
        command.args(["--platform", &job.platform]);
    }
    let mut args: Vec<(&String, &String)> = job.build_args.iter().collect();
    args.sort();
    for (key, value) in args {
        if !valid_arg_name(key) {
            return Err(Failure::failed(
                build::BuildFailureReason::Internal,
                format!("the build job is invalid: build argument {key:?} is not a valid name"),
            ));
        }
        if affects_buildah(key) {
            // A name buildah itself reads from its environment stays on the command line.
            command.arg("--build-arg").arg(format!("{key}={value}"));
        } else {
            // The name on the command line, the value (maybe a secret) in the environment,
            // out of `ps`.
            command.arg("--build-arg").arg(key).env(key, value);
        }
    }
    // Buildah puts the bundles of its `RUN` containers under TMPDIR: under the job's
    // scratch directory, [`reap`] finds them if the build is stopped midway.
    let tmp = scratch.join("tmp");
    tokio::fs::create_dir_all(&tmp).await.map_err(|e| {
        Failure::failed(
            build::BuildFailureReason::Internal,
            format!("cannot create the build's temporary directory: {e}"),
        )
    })?;
    command.env("TMPDIR", &tmp);
    command.arg(root).current_dir(root);
    log.info(&format!(
        "building the image with buildah from {}",
        dockerfile
            .strip_prefix(scratch.join("checkout"))
            .unwrap_or(dockerfile)
            .display()
    ));
    let watch = Steps::watch(Arc::clone(&steps), buildah_step);
    if let Err(error) =
        builder::run_process(command, "buildah bud".to_owned(), log, Some(watch)).await
    {
        let steps = steps.lock().map_err(|_| {
            Failure::failed(
                build::BuildFailureReason::Internal,
                "the step tracker broke",
            )
        })?;
        return Err(steps.failure(&error));
    }
    let image = tokio::fs::read_to_string(&iid)
        .await
        .map(|s| s.trim().trim_start_matches("sha256:").to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            Failure::failed(
                build::BuildFailureReason::Internal,
                "buildah succeeded without naming the image it built",
            )
        })?;
    Ok(image)
}

/// Stops the `RUN` containers a buildah build left running under `scratch` — a timeout or a
/// cancel kills buildah, but the OCI runtime's containers live in their own sessions.
pub(crate) async fn reap(runtime: &str, scratch: &Path) {
    let tmp = scratch.join("tmp");
    if !tokio::fs::try_exists(&tmp).await.unwrap_or(false) {
        return;
    }
    let Ok(listing) = Command::new(runtime)
        .args(["list", "--format", "json"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
    else {
        return;
    };
    let containers: Vec<serde_json::Value> =
        serde_json::from_slice(&listing.stdout).unwrap_or_default();
    for container in containers {
        let (Some(id), Some(bundle)) = (
            container.get("id").and_then(|v| v.as_str()),
            container.get("bundle").and_then(|v| v.as_str()),
        ) else {
            continue;
        };
        if !Path::new(bundle).starts_with(&tmp) {
            continue;
        }
        tracing::info!(container = id, "stopping a build container left running");
        for args in [vec!["kill", id, "KILL"], vec!["delete", "--force", id]] {
            let _ = Command::new(runtime)
                .args(&args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await;
        }
    }
}

/// `buildah push` of `image` to `reference`; returns the manifest digest.
async fn buildah_push(
    buildah: &Buildah,
    registry: &Registry,
    image: &str,
    reference: &str,
    auth: &Option<PathBuf>,
    scratch: &Path,
    log: &LogWriter,
) -> Result<String, Failure> {
    let digest_file = scratch.join("digest");
    let mut command = buildah.command();
    command
        .arg("push")
        .arg("--signature-policy")
        .arg(buildah.policy())
        .arg(format!("--tls-verify={}", !registry.insecure()))
        .arg("--digestfile")
        .arg(&digest_file);
    if let Some(auth) = auth {
        command.arg("--authfile").arg(auth);
    }
    command.arg(image).arg(format!("docker://{reference}"));
    let steps = Arc::new(Mutex::new(Steps::default()));
    let watch = Steps::watch(Arc::clone(&steps), |_| None);
    if let Err(error) =
        builder::run_process(command, "buildah push".to_owned(), log, Some(watch)).await
    {
        let detail = steps
            .lock()
            .ok()
            .and_then(|s| s.error.clone())
            .unwrap_or_else(|| error.to_string());
        return Err(Failure::failed(
            build::BuildFailureReason::RegistryError,
            format!("pushing {reference} failed: {detail}"),
        ));
    }
    read_digest(&digest_file).await
}

async fn read_digest(path: &Path) -> Result<String, Failure> {
    tokio::fs::read_to_string(path)
        .await
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|d| {
            d.strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .ok_or_else(|| {
            Failure::failed(
                build::BuildFailureReason::Internal,
                "the builder pushed without reporting the image digest",
            )
        })
}

/// `buildctl build`: builds with the Dockerfile frontend on `buildkitd` and pushes in the
/// same solve, importing and exporting the layer cache at `<repository>:buildcache`;
/// returns the manifest digest.
#[allow(clippy::too_many_arguments)]
async fn buildctl_build(
    context: &Context,
    job: &build::BuildJob,
    root: &Path,
    dockerfile: &Path,
    registry: &Registry,
    reference: &str,
    auth: &Option<PathBuf>,
    scratch: &Path,
    log: &LogWriter,
    steps: Arc<Mutex<Steps>>,
) -> Result<String, Failure> {
    let metadata = scratch.join("buildkit-metadata.json");
    let dockerfile_dir = dockerfile.parent().unwrap_or(root);
    let dockerfile_name = dockerfile
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".to_owned());
    let cache_ref = registry.reference("buildcache");
    let insecure = if registry.insecure() {
        ",registry.insecure=true"
    } else {
        ""
    };
    let mut command = Command::new(&context.settings.buildctl);
    if !context.settings.buildkit_addr.is_empty() {
        command.args(["--addr", &context.settings.buildkit_addr]);
    }
    command
        .args(["build", "--progress=plain", "--frontend=dockerfile.v0"])
        .arg("--local")
        .arg(format!("context={}", root.display()))
        .arg("--local")
        .arg(format!("dockerfile={}", dockerfile_dir.display()))
        .args(["--opt", &format!("filename={dockerfile_name}")])
        .args([
            "--output",
            &format!("type=image,name={reference},push=true{insecure}"),
        ])
        .args([
            "--export-cache",
            &format!("type=registry,ref={cache_ref},mode=max{insecure}"),
        ])
        .args([
            "--import-cache",
            &format!("type=registry,ref={cache_ref}{insecure}"),
        ])
        .arg("--metadata-file")
        .arg(&metadata);
    if !job.platform.is_empty() {
        command.args(["--opt", &format!("platform={}", job.platform)]);
    }
    let mut args: Vec<(&String, &String)> = job.build_args.iter().collect();
    args.sort();
    for (key, value) in args {
        if !valid_arg_name(key) {
            return Err(Failure::failed(
                build::BuildFailureReason::Internal,
                format!("the build job is invalid: build argument {key:?} is not a valid name"),
            ));
        }
        // buildctl takes build arguments only on its command line.
        command.args(["--opt", &format!("build-arg:{key}={value}")]);
    }
    if let Some(auth) = auth
        && let Some(dir) = auth.parent()
    {
        command.env("DOCKER_CONFIG", dir);
    }
    log.info(&format!(
        "building and pushing the image with buildkit{}",
        if context.settings.buildkit_addr.is_empty() {
            String::new()
        } else {
            format!(" at {}", context.settings.buildkit_addr)
        }
    ));
    let watch = Steps::watch(Arc::clone(&steps), buildkit_step);
    if let Err(error) =
        builder::run_process(command, "buildctl build".to_owned(), log, Some(watch)).await
    {
        if let StepError::NotInstalled { .. } = error {
            return Err(not_installed("buildkit", "buildctl"));
        }
        let steps = steps.lock().map_err(|_| {
            Failure::failed(
                build::BuildFailureReason::Internal,
                "the step tracker broke",
            )
        })?;
        return Err(steps.failure(&error));
    }
    let text = tokio::fs::read_to_string(&metadata)
        .await
        .unwrap_or_default();
    let digest = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v.get("containerimage.digest")
                .and_then(|d| d.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let file = scratch.join("digest");
    tokio::fs::write(&file, &digest).await.ok();
    read_digest(&file).await
}

/// Whether an environment variable of this name changes how buildah runs.
fn affects_buildah(name: &str) -> bool {
    matches!(name, "PATH" | "HOME" | "TMPDIR" | "USER" | "LANG" | "SHELL")
        || [
            "CONTAINERS_",
            "BUILDAH_",
            "REGISTRY_",
            "XDG_",
            "STORAGE_",
            "LC_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// Build argument names as Dockerfiles accept them.
fn valid_arg_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_read_from_the_builders_output() {
        assert_eq!(
            buildah_step("STEP 3/5: RUN make all"),
            Some((3, 5, "RUN make all".into()))
        );
        assert_eq!(buildah_step("COMMIT x"), None);
        assert_eq!(
            buildkit_step("#7 [build 2/3] RUN exit 3"),
            Some((2, 3, "RUN exit 3".into()))
        );
        assert_eq!(
            buildkit_step("#5 [1/2] FROM docker.io/library/busybox"),
            Some((1, 2, "FROM docker.io/library/busybox".into()))
        );
        assert_eq!(buildkit_step("#5 DONE 0.1s"), None);
        assert_eq!(
            error_line("Error: building at STEP \"RUN exit 3\": exit status 3"),
            Some("building at step \"run exit 3\": exit status 3".into())
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_tag("v1.2.0"));
        assert!(valid_tag(&cache_tag(&"a".repeat(64))));
        assert!(!valid_tag("-x"));
        assert!(!valid_tag("a/b"));
        assert!(valid_arg_name("NODE_ENV"));
        assert!(!valid_arg_name("1X"));
        assert!(!valid_arg_name("A-B"));
    }
}
