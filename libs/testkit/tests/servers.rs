//! The testkit against real servers: isolation, clean-up, and throwaway servers that do
//! not outlive the test process.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::Command;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use slipway_testkit::{TestDatabase, TestNats};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// `host:port` of a `postgres://…` or `nats://…` URL.
fn socket_addr(url: &str) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let rest = url.split_once("://").ok_or("no scheme")?.1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host_port = rest.split(['/', '?']).next().ok_or("no host")?;
    Ok(host_port.to_socket_addrs()?.next().ok_or("unresolved")?)
}

fn nats_info(addr: &SocketAddr) -> std::io::Result<String> {
    let stream = TcpStream::connect_timeout(addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line)
}

#[tokio::test]
async fn each_postgres_test_database_is_private_and_dropped() -> TestResult {
    let first = TestDatabase::postgres().await?;
    let second = TestDatabase::postgres().await?;
    assert_eq!(first.backend(), DbBackend::Postgres);
    assert_ne!(first.url(), second.url());

    let conn = Database::connect(first.url()).await?;
    conn.execute_unprepared("CREATE TABLE only_here (id INT PRIMARY KEY)")
        .await?;
    let other = Database::connect(second.url()).await?;
    let seen = other
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT 1 FROM information_schema.tables WHERE table_name = 'only_here'",
        ))
        .await?;
    assert!(seen.is_empty(), "a table leaked between test databases");
    other.close().await?;

    // Dropped even while the test still holds an open pool to it.
    let url = first.url().to_owned();
    drop(first);
    drop(conn);
    let gone = Database::connect(url.as_str()).await;
    let err = gone
        .err()
        .ok_or("the dropped database still accepts connections")?;
    assert!(err.to_string().contains("does not exist"), "{err}");
    Ok(())
}

#[tokio::test]
async fn nats_has_jetstream_and_namespaces_differ() -> TestResult {
    let a = TestNats::start().await?;
    let b = TestNats::start().await?;
    assert_eq!(a.url(), b.url(), "one server per process");
    assert_ne!(a.namespace(), b.namespace());
    let info = nats_info(&socket_addr(a.url())?)?;
    assert!(info.contains("\"jetstream\":true"), "{info}");
    Ok(())
}

/// Started by [`throwaway_servers_die_with_the_test_process`] in a child process, with the
/// server variables cleared so that it starts throwaway servers; prints their URLs.
#[tokio::test]
#[ignore = "the body of throwaway_servers_die_with_the_test_process, run in a child process"]
async fn child_starts_throwaway_servers() -> TestResult {
    let db = TestDatabase::postgres().await?;
    let nats = TestNats::start().await?;
    let conn = Database::connect(db.url()).await?;
    conn.execute_unprepared("SELECT 1").await?;
    println!("CHILD-URLS {} {}", db.url(), nats.url());
    Ok(())
}

#[test]
fn throwaway_servers_die_with_the_test_process() -> TestResult {
    let output = Command::new(std::env::current_exe()?)
        .args([
            "--ignored",
            "--exact",
            "child_starts_throwaway_servers",
            "--nocapture",
        ])
        .env("SLIPWAY_TEST_DATABASE_URL", "")
        .env("SLIPWAY_TEST_NATS_URL", "")
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CHILD-URLS "))
        .ok_or("child printed no URLs")?;
    let (pg_url, nats_url) = line.split_once(' ').ok_or("malformed child output")?;
    let addrs = [socket_addr(pg_url)?, socket_addr(nats_url)?];
    for addr in addrs {
        assert_ne!(addr.port(), 5432, "child used the shared PostgreSQL");
        assert_ne!(addr.port(), 4222, "child used the shared NATS");
    }

    // The child has exited; its watchdogs stop both servers.
    let deadline = Instant::now() + Duration::from_secs(20);
    for addr in addrs {
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "{addr} still answers after the test process ended"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

#[test]
fn missing_binaries_are_named_with_their_package() {
    let err = slipway_testkit::Error::MissingBinary {
        binary: "nats-server",
        searched: "PATH".into(),
        package: "nats-server",
        env_var: slipway_testkit::NATS_URL_ENV,
    };
    let text = err.to_string();
    assert!(text.contains("apt-get install nats-server"), "{text}");
    assert!(text.contains("SLIPWAY_TEST_NATS_URL"), "{text}");
}
