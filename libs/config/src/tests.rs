use std::io::Write;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn defaults_load_without_file_or_env() {
    let settings: ServiceSettings = load_from(None, env(&[])).unwrap();
    assert_eq!(settings.database.max_connections, 10);
    assert_eq!(settings.nats.url, "nats://127.0.0.1:4222");
    assert_eq!(settings.telemetry.log_format, LogFormat::Text);
}

#[test]
fn env_overrides_file_which_overrides_defaults() {
    let mut file = tempfile_in_target();
    writeln!(
        file.1,
        "[database]\nurl = \"postgres://file@db/slipway\"\nmax_connections = 3\n[telemetry]\nlog_format = \"json\""
    )
    .unwrap();
    let settings: ServiceSettings = load_from(
        Some(&file.0),
        env(&[
            ("SLIPWAY__DATABASE__URL", "postgres://env@db/slipway"),
            ("SLIPWAY__SERVER__CONCURRENCY_LIMIT", "7"),
            ("UNRELATED", "ignored"),
        ]),
    )
    .unwrap();
    assert_eq!(settings.database.url, "postgres://env@db/slipway");
    assert_eq!(settings.database.max_connections, 3);
    assert_eq!(settings.server.concurrency_limit, 7);
    assert_eq!(settings.telemetry.log_format, LogFormat::Json);
    std::fs::remove_file(&file.0).unwrap();
}

#[test]
fn invalid_value_names_its_path() {
    let err =
        load_from::<ServiceSettings, _>(None, env(&[("SLIPWAY__DATABASE__URL", "mysql://nope")]))
            .unwrap_err();
    assert!(err.to_string().contains("database.url"), "{err}");

    let err =
        load_from::<ServiceSettings, _>(None, env(&[("SLIPWAY__SERVER__CONCURRENCY_LIMIT", "0")]))
            .unwrap_err();
    assert!(
        err.to_string().contains("server.concurrency_limit"),
        "{err}"
    );
}

#[test]
fn wrongly_typed_value_names_its_key() {
    let err = load_from::<ServiceSettings, _>(
        None,
        env(&[("SLIPWAY__DATABASE__MAX_CONNECTIONS", "many")]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("max_connections"), "{err}");
}

#[test]
fn unknown_key_in_file_is_refused() {
    let mut file = tempfile_in_target();
    writeln!(file.1, "[database]\nurll = \"x\"").unwrap();
    let err = load_from::<ServiceSettings, _>(Some(&file.0), env(&[])).unwrap_err();
    assert!(err.to_string().contains("urll"), "{err}");
    std::fs::remove_file(&file.0).unwrap();
}

#[test]
fn missing_file_is_an_error() {
    let missing = std::path::Path::new("/nonexistent/slipway.toml");
    assert!(load_from::<ServiceSettings, _>(Some(missing), env(&[])).is_err());
}

fn tempfile_in_target() -> (std::path::PathBuf, std::fs::File) {
    let path = std::env::temp_dir().join(format!(
        "slipway-config-{}-{}.toml",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let file = std::fs::File::create(&path).unwrap();
    (path, file)
}

#[test]
fn auth_is_optional_validated_and_never_printed() {
    let credential = format!("slps_{}", "A1".repeat(25).get(..49).unwrap());
    let settings: ServiceSettings = load_from(
        None,
        env(&[
            ("SLIPWAY__AUTH__IDENTITY_URL", "http://127.0.0.1:7801"),
            ("SLIPWAY__AUTH__SERVICE_CREDENTIAL", credential.as_str()),
        ]),
    )
    .unwrap();
    assert_eq!(
        settings.auth.identity_url.as_deref(),
        Some("http://127.0.0.1:7801")
    );
    assert_eq!(
        settings.auth.service_credential.as_deref(),
        Some(credential.as_str())
    );
    let printed = format!("{settings:?}");
    assert!(!printed.contains(&credential), "{printed}");
    assert!(printed.contains("<redacted>"), "{printed}");

    let defaults: ServiceSettings = load_from(None, env(&[])).unwrap();
    assert_eq!(defaults.auth.identity_url, None);
    assert_eq!(defaults.auth.service_credential, None);

    for (key, value) in [
        ("SLIPWAY__AUTH__IDENTITY_URL", "identity:7801"),
        ("SLIPWAY__AUTH__SERVICE_CREDENTIAL", "slp_abc"),
        ("SLIPWAY__AUTH__SERVICE_CREDENTIAL", &credential[..40]),
    ] {
        let err = load_from::<ServiceSettings, _>(None, env(&[(key, value)])).unwrap_err();
        assert!(err.to_string().contains("auth."), "{err}");
        assert!(!err.to_string().contains("slps_A1"), "{err}");
    }
}
