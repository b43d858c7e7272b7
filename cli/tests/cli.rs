//! The `slipway` CLI as a user drives it, against a real `slipway dev`: login, projects,
//! environments, services, variables and secrets, deployments with and without waiting,
//! status, history, logs; tables and JSON; exit codes, error messages and hints.
// Helpers outside `#[test]` functions panic too: that is how a test reports the unexpected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

const BINARY: &str = env!("CARGO_BIN_EXE_slipway");

/// A `slipway dev` of its own (temporary data directory, a free port).
struct Dev {
    child: tokio::process::Child,
    addr: String,
    token: String,
}

impl Dev {
    async fn start(data_dir: &Path) -> Self {
        let mut child = tokio::process::Command::new(BINARY)
            .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let (addr, token) = tokio::time::timeout(Duration::from_secs(30), async {
            let mut token = None;
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(found) = line.strip_prefix("owner token (shown once): ") {
                    token = Some(found.trim().to_owned());
                }
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return (
                        addr.trim().to_owned(),
                        token.expect("no token before listening"),
                    );
                }
            }
            panic!("slipway dev exited before listening");
        })
        .await
        .expect("slipway dev did not print `listening on ADDR`");
        // Keep reading so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, addr, token }
    }
}

/// Stops `slipway dev` with SIGTERM, so its local agent stops the processes it runs (a
/// SIGKILL would leave them behind, in their own process groups).
impl Drop for Dev {
    fn drop(&mut self) {
        let Some(pid) = self.child.id() else {
            return;
        };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        for _ in 0..200 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs the `slipway` binary with its own config file, as a user in a shell would.
struct User {
    config: PathBuf,
}

impl User {
    fn new(dir: &Path) -> Self {
        Self {
            config: dir.join("slipway").join("config.toml"),
        }
    }

    async fn run_with(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
        let mut command = tokio::process::Command::new(BINARY);
        command
            .args(args)
            .env("SLIPWAY_CONFIG", &self.config)
            .env_remove("SLIPWAY_ADDRESS")
            .env_remove("SLIPWAY_TOKEN")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).await.unwrap();
        }
        drop(input);
        tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("slipway {args:?} did not finish"))
            .unwrap()
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, None, &[]).await
    }

    /// Runs a command that must succeed; answers its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            output.status.success(),
            "slipway {args:?} failed ({}):\n{}{}",
            output.status,
            text(&output.stdout),
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    async fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let stdout = self.ok(&all).await;
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn logged_in(dir: &Path) -> (Dev, User) {
    let dev = Dev::start(&dir.join("data")).await;
    let user = User::new(dir);
    let output = user
        .run_with(&["login", "--address", &dev.addr], Some(&dev.token), &[])
        .await;
    assert!(output.status.success(), "login: {}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("organization: default"),
        "{}",
        text(&output.stdout)
    );
    (dev, user)
}

/// The `local` cluster `slipway dev` registers once it serves; environments go on it.
async fn wait_for_local_cluster(user: &User) {
    for _ in 0..100 {
        let clusters = user.json(&["cluster", "list"]).await;
        if clusters
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "local")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("slipway dev never registered its local cluster");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `examples/hello` copied into a fresh git repository with one commit on `main`.
fn hello_repository(dir: &Path) -> PathBuf {
    let repo = dir.join("hello");
    std::fs::create_dir_all(&repo).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello");
    for entry in std::fs::read_dir(example).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), repo.join(entry.file_name())).unwrap();
    }
    for args in [
        &["init", "--quiet", "--initial-branch=main"][..],
        &["add", "."],
        &[
            "-c",
            "user.name=slipway",
            "-c",
            "user.email=cli@slipway.test",
            "commit",
            "--quiet",
            "-m",
            "hello",
        ],
    ] {
        let status = std::process::Command::new("git")
            .args(args)
            .current_dir(&repo)
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?} failed");
    }
    repo
}

async fn http_get(port: u16) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn login_stores_the_token_owner_only_and_selects_the_organization() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, user) = logged_in(dir.path()).await;
    let stored = std::fs::read_to_string(&user.config).unwrap();
    assert!(stored.contains("slp_"), "the token is stored: {stored}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&user.config)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "config mode {mode:o}");
    }
    let context = user.json(&["context"]).await;
    assert_eq!(context["organization"], "default");
    assert_eq!(context["logged_in"], true);

    user.ok(&["logout"]).await;
    let output = user.run(&["project", "list"]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("error: "), "{stderr}");
    assert!(
        stderr.contains("hint: ") && stderr.contains("slipway login"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_project_from_nothing_to_a_running_app() {
    let dir = tempfile::tempdir().unwrap();
    let (dev, user) = logged_in(dir.path()).await;
    wait_for_local_cluster(&user).await;

    // Project and environments, as tables and as JSON.
    let created = user
        .ok(&["project", "create", "shop", "--description", "the shop"])
        .await;
    assert!(
        created.contains("name:") && created.contains("shop"),
        "{created}"
    );
    let table = user.ok(&["project", "list"]).await;
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("ID"),
        "{table}"
    );
    assert!(
        table.lines().any(|line| line.starts_with("shop ")),
        "{table}"
    );
    let projects = user.json(&["project", "list"]).await;
    let shop = &projects.as_array().unwrap()[0];
    assert_eq!(shop["name"], "shop");
    assert_eq!(shop["description"], "the shop");
    let shop_id = shop["id"].as_str().unwrap().to_owned();
    assert_eq!(
        user.json(&["project", "get", &shop_id]).await["name"],
        "shop"
    );

    user.ok(&["environment", "create", "web", "-p", "shop"])
        .await;
    user.ok(&["environment", "create", "app", "-p", "shop"])
        .await;
    let environments = user.json(&["environment", "list", "-p", "shop"]).await;
    let mut names: Vec<&str> = environments
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["app", "web"]);
    assert_eq!(environments[0]["mode"], "ENVIRONMENT_MODE_DEVELOPMENT");
    let context = user
        .json(&["context", "set", "-p", "shop", "-e", "web"])
        .await;
    assert_eq!(context["project"], "shop");
    assert_eq!(context["environment"], "web");

    // A container service, a variable and a secret.
    let service = user
        .json(&[
            "service", "create", "nginx", "--image", "nginx", "--tag", "1.27", "--port", "80",
        ])
        .await;
    assert_eq!(service["kind"], "SERVICE_KIND_CONTAINER");
    assert_eq!(service["container"]["source"]["image"], "nginx");
    let listed = user.ok(&["service", "list"]).await;
    assert!(listed.contains("nginx:1.27"), "{listed}");

    user.ok(&["variable", "set", "GREETING=hello"]).await;
    let secret_set = user
        .ok(&["variable", "set", "API_KEY=s3cret-value", "--secret"])
        .await;
    assert!(!secret_set.contains("s3cret-value"), "{secret_set}");
    let variables = user.json(&["variable", "list"]).await;
    let variables = variables.as_array().unwrap();
    let greeting = variables.iter().find(|v| v["key"] == "GREETING").unwrap();
    assert_eq!(greeting["value"], "hello");
    let api_key = variables.iter().find(|v| v["key"] == "API_KEY").unwrap();
    assert_eq!(api_key["is_secret"], true);
    assert_eq!(api_key["value"], "");
    let table = user.ok(&["variable", "list"]).await;
    assert!(
        !table.contains("s3cret-value") && table.contains("(secret)"),
        "{table}"
    );
    let effective = user
        .ok(&["variable", "effective", "--service", "nginx"])
        .await;
    assert!(
        effective.contains("GREETING") && !effective.contains("s3cret-value"),
        "{effective}"
    );

    // Deploy without waiting: queued at once. Then with waiting: images need Kubernetes,
    // which `slipway dev`'s process runtime is not, so it fails with exit code 3.
    let queued = user.json(&["deploy", "--no-wait"]).await;
    let first = queued["id"].as_str().unwrap().to_owned();
    assert_eq!(queued["action"], "DEPLOYMENT_ACTION_DEPLOY");
    let failed = user.run(&["deploy"]).await;
    let stderr = text(&failed.stderr);
    assert_eq!(failed.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("error: deployment") && stderr.contains("ERROR"),
        "{stderr}"
    );
    assert!(
        stderr.contains("deployment "),
        "progress is shown: {stderr}"
    );

    // The app environment: examples/hello from a local git repository, deployed, waited for.
    let repo = hello_repository(dir.path());
    let port = free_port().to_string();
    user.ok(&[
        "service",
        "create",
        "hello",
        "-e",
        "app",
        "-p",
        "shop",
        "--git-url",
        repo.to_str().unwrap(),
        "--branch",
        "main",
        "--port",
        &port,
        "--http-probe",
        "/",
        "--",
        "python3",
        "app.py",
    ])
    .await;
    user.ok(&["context", "set", "-e", "app"]).await;
    let deployed = user.run(&["deploy"]).await;
    let progress = text(&deployed.stderr);
    assert!(
        deployed.status.success(),
        "{progress}{}",
        text(&deployed.stdout)
    );
    assert!(progress.contains("stage applications"), "{progress}");
    assert!(progress.contains("DEPLOYED"), "{progress}");
    let response = http_get(port.parse().unwrap()).await;
    assert!(response.contains("hello from slipway"), "{response}");

    let status = user.ok(&["status"]).await;
    let row = status
        .lines()
        .find(|l| l.starts_with("hello "))
        .unwrap_or_default();
    assert!(
        row.contains("RUNNING") && row.contains("UP_TO_DATE"),
        "{status}"
    );
    let status = user.json(&["status"]).await;
    assert_eq!(status["services"][0]["service_name"], "hello");

    // History: the app's deployment, and the web environment's two (the first too).
    let history = user.json(&["deployments"]).await;
    let latest = history[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(history[0]["status"], "DEPLOYMENT_STATUS_DEPLOYED");
    let web = user.json(&["deployments", "-e", "web", "-p", "shop"]).await;
    assert!(
        web.as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == first.as_str()),
        "{web}"
    );
    let detail = user.ok(&["deployments", &latest]).await;
    assert!(
        detail.contains("DEPLOYED") && detail.contains("hello"),
        "{detail}"
    );

    // Logs: lines of the app, or UNIMPLEMENTED while log-streaming is being built.
    let logs = user.run(&["logs", "--tail", "50"]).await;
    if logs.status.success() {
        let lines = text(&logs.stdout);
        assert!(lines.lines().all(|l| l.contains(" | ")), "{lines}");
    } else {
        let stderr = text(&logs.stderr);
        assert!(
            stderr.contains("hint: this Slipway server does not support this yet"),
            "{stderr}"
        );
    }
    drop(dev);
}

#[tokio::test]
async fn errors_name_the_problem_and_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(&dir.path().join("data")).await;
    let user = User::new(dir.path());

    // Nothing configured yet.
    let output = user.run(&["project", "list"]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("error: no Slipway address is configured"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: run `slipway login"), "{stderr}");

    // A wrong token is refused at login and never stored.
    let bad = "slp_0000000000000000000000000000000000000000000000000";
    let output = user
        .run(&["login", "--address", &dev.addr, "--token", bad])
        .await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("slipway login"), "{stderr}");
    assert!(!user.config.exists(), "a refused token is not stored");

    // No token: the server refuses, the hint says to log in.
    let env = [("SLIPWAY_ADDRESS", dev.addr.as_str())];
    let output = user.run_with(&["organization", "list"], None, &env).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("hint: your token is missing, wrong or expired"),
        "{stderr}"
    );

    let output = user
        .run_with(&["login", "--address", &dev.addr], Some(&dev.token), &[])
        .await;
    assert!(output.status.success(), "{}", text(&output.stderr));

    // Unknown project: by name (the CLI looks it up) and by id (the server's NOT_FOUND).
    let output = user.run(&["project", "get", "nope"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("error: project \"nope\" not found"));
    let output = user
        .run(&["project", "get", "0190f1a2-0000-7000-8000-000000000000"])
        .await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("not found"), "{stderr}");
    assert!(stderr.contains("hint: check the name or id"), "{stderr}");

    // Invalid input: the server's field violations are shown.
    let output = user.run(&["project", "create", "Not_A_Label"]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("project.name"), "{stderr}");
    // Bad usage is clap's exit code 2; the CLI's own checks name the flag to fix.
    let output = user.run(&["deploy", "--commit", "abc"]).await;
    assert_eq!(output.status.code(), Some(2));
    let output = user.run(&["variable", "set", "NOEQUALS"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("is not KEY=VALUE"));
    let output = user.run(&["status"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("hint: pass -e ENVIRONMENT"));

    // Every command's help has examples.
    for command in [
        &["login"][..],
        &["context"],
        &["project", "create"],
        &["environment", "clone"],
        &["service", "create"],
        &["cluster", "register"],
        &["variable", "set"],
        &["rule", "create"],
        &["deploy"],
        &["logs"],
        &["deployments"],
        &["status"],
        &["token", "create"],
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let help = user.ok(&args).await;
        assert!(help.contains("Examples:"), "{command:?}: {help}");
    }
}
