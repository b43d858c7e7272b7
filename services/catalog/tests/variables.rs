//! VariableService and CatalogInternalService.GetEnvironmentSnapshot over gRPC,
//! authenticated through identity, on real PostgreSQL and NATS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{BoxError, Harness, Org, TestResult, violations, with_token};
use slipway_catalog::api::CatalogMessage as _;
use slipway_catalog::store::{Kind, NewRow, Store, new_id};
use slipway_identity::store::BuiltinRole;
use slipway_proto::catalog::v1 as pb;
use slipway_proto::catalog::v1::catalog_internal_service_client::CatalogInternalServiceClient;
use slipway_proto::catalog::v1::variable_service_client::VariableServiceClient;
use slipway_proto::common::v1::{EnvironmentMode, ServiceKind};
use tonic::Code;
use tonic::transport::Channel;

use pb::create_variable_request::Scope as CreateScope;
use pb::list_variables_request::Scope as ListScope;

fn variables(h: &Harness) -> VariableServiceClient<Channel> {
    VariableServiceClient::new(h.channel.clone())
}

fn internal(h: &Harness) -> CatalogInternalServiceClient<Channel> {
    CatalogInternalServiceClient::new(h.channel.clone())
}

/// A project, a cluster, a DEVELOPMENT environment and two services in it: `api`
/// (a container on port 8080) and `postgres` (a container-mode database).
struct World {
    project: pb::Project,
    environment: pb::Environment,
    api: String,
    postgres: String,
}

async fn world(h: &Harness, org: &Org) -> Result<World, BoxError> {
    let project = h.project(org, "shop").await?;
    let cluster = h.cluster(org, "main").await?;
    let environment = h
        .environment(org, &project, "dev", EnvironmentMode::Development, &cluster)
        .await?;
    let api = pb::Service {
        name: "api".into(),
        kind: ServiceKind::Container.into(),
        settings: Some(pb::service::Settings::Container(pb::ContainerSettings {
            source: Some(pb::ImageSource {
                image: "team/api".into(),
                tag: "1.0".into(),
                ..Default::default()
            }),
            runtime: Some(pb::RuntimeSettings {
                ports: vec![pb::Port {
                    internal_port: 8080,
                    ..Default::default()
                }],
                ..Default::default()
            }),
        })),
        ..Default::default()
    };
    let postgres = pb::Service {
        name: "postgres".into(),
        kind: ServiceKind::Database.into(),
        settings: Some(pb::service::Settings::Database(pb::DatabaseSettings {
            engine: pb::DatabaseEngine::Postgresql.into(),
            version: "16".into(),
            mode: pb::DatabaseMode::Container.into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let api = service_row(h, org, &environment, &api, "CONTAINER").await?;
    let postgres = service_row(h, org, &environment, &postgres, "DATABASE").await?;
    Ok(World {
        project,
        environment,
        api,
        postgres,
    })
}

/// A service row written to the store directly (ServiceService is tested elsewhere).
async fn service_row(
    h: &Harness,
    org: &Org,
    environment: &pb::Environment,
    service: &pb::Service,
    subtype: &str,
) -> Result<String, BoxError> {
    let store = Store::new(h.platform.db.clone());
    let row = NewRow {
        id: new_id(),
        organization_id: org.id.clone(),
        parent_id: environment.id.clone(),
        name: service.name.clone(),
        subtype: subtype.into(),
        project_id: Some(environment.project_id.clone()),
        environment_id: Some(environment.id.clone()),
        spec: service.to_spec(),
        ..Default::default()
    };
    Ok(store.insert(Kind::Service, row, None).await?.0.id)
}

fn value(key: &str, v: &str) -> pb::Variable {
    pb::Variable {
        key: key.into(),
        kind: pb::VariableKind::Value.into(),
        value: v.into(),
        ..Default::default()
    }
}

fn overriding(key: &str, v: &str) -> pb::Variable {
    pb::Variable {
        kind: pb::VariableKind::Override.into(),
        ..value(key, v)
    }
}

fn alias(key: &str, target: &str) -> pb::Variable {
    pb::Variable {
        key: key.into(),
        kind: pb::VariableKind::Alias.into(),
        alias_target_key: target.into(),
        ..Default::default()
    }
}

fn file(key: &str, path: &str, content: &str) -> pb::Variable {
    pb::Variable {
        key: key.into(),
        kind: pb::VariableKind::File.into(),
        value: content.into(),
        file_mount_path: path.into(),
        ..Default::default()
    }
}

fn secret(variable: pb::Variable) -> pb::Variable {
    pb::Variable {
        is_secret: true,
        ..variable
    }
}

async fn create(
    client: &mut VariableServiceClient<Channel>,
    token: &str,
    scope: CreateScope,
    variable: pb::Variable,
    request_id: &str,
) -> Result<pb::Variable, tonic::Status> {
    Ok(client
        .create_variable(with_token(
            pb::CreateVariableRequest {
                scope: Some(scope),
                variable: Some(variable),
                request_id: request_id.into(),
            },
            token,
        ))
        .await?
        .into_inner()
        .variable
        .expect("a variable"))
}

async fn list(
    client: &mut VariableServiceClient<Channel>,
    token: &str,
    scope: ListScope,
) -> Result<Vec<pb::Variable>, tonic::Status> {
    Ok(client
        .list_variables(with_token(
            pb::ListVariablesRequest {
                scope: Some(scope),
                ..Default::default()
            },
            token,
        ))
        .await?
        .into_inner()
        .variables)
}

async fn effective(
    client: &mut VariableServiceClient<Channel>,
    token: &str,
    service_id: &str,
) -> Result<Vec<pb::EffectiveVariable>, tonic::Status> {
    Ok(client
        .list_effective_variables(with_token(
            pb::ListEffectiveVariablesRequest {
                service_id: service_id.into(),
            },
            token,
        ))
        .await?
        .into_inner()
        .variables)
}

fn find<'a>(vars: &'a [pb::EffectiveVariable], key: &str) -> &'a pb::EffectiveVariable {
    vars.iter()
        .find(|v| v.key == key)
        .unwrap_or_else(|| panic!("{key} is not among the effective variables"))
}

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_per_kind_and_scope_with_effective_variables() -> TestResult {
    let h = Harness::start().await?;
    let w = world(&h, &h.a).await?;
    let admin = h.a.admin.clone();
    let mut client = variables(&h);
    let project = CreateScope::ProjectId(w.project.id.clone());
    let env = CreateScope::EnvironmentId(w.environment.id.clone());
    let api = CreateScope::ServiceId(w.api.clone());

    // VALUE on the project, with a request id: a repeat returns the first and creates
    // nothing.
    let level = create(
        &mut client,
        &admin,
        project.clone(),
        value("LOG_LEVEL", "info"),
        "r1",
    )
    .await?;
    assert_eq!(level.key, "LOG_LEVEL");
    assert_eq!(level.value, "info");
    assert_eq!(level.organization_id, h.a.id);
    assert_eq!(
        level.scope,
        Some(pb::variable::Scope::ProjectId(w.project.id.clone()))
    );
    assert!(!level.etag.is_empty() && level.create_time.is_some());
    let again = create(
        &mut client,
        &admin,
        project.clone(),
        value("LOG_LEVEL", "other"),
        "r1",
    )
    .await?;
    assert_eq!(again, level);
    let listed = list(
        &mut client,
        &admin,
        ListScope::ProjectId(w.project.id.clone()),
    )
    .await?;
    assert_eq!(listed, vec![level.clone()]);
    // The same key again without the request id is taken.
    let taken = create(
        &mut client,
        &admin,
        project.clone(),
        value("LOG_LEVEL", "x"),
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);
    // Defining it again in a narrower scope is refused too: that is what OVERRIDE is for.
    let defined = create(
        &mut client,
        &admin,
        env.clone(),
        value("LOG_LEVEL", "x"),
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(defined.code(), Code::AlreadyExists);

    // OVERRIDE in the environment, FILE and ALIAS (of a built-in) on the service.
    let debug = create(
        &mut client,
        &admin,
        env.clone(),
        overriding("LOG_LEVEL", "debug"),
        "",
    )
    .await?;
    assert_eq!(
        debug.scope,
        Some(pb::variable::Scope::EnvironmentId(w.environment.id.clone()))
    );
    let config = create(
        &mut client,
        &admin,
        api.clone(),
        file("CONFIG", "/etc/app/config.json", "{\"a\":1}"),
        "",
    )
    .await?;
    assert_eq!(config.file_mount_path, "/etc/app/config.json");
    let pg = create(
        &mut client,
        &admin,
        api.clone(),
        alias("PG_HOST", "SLIPWAY_POSTGRES_HOST"),
        "",
    )
    .await?;
    let region = create(&mut client, &admin, env.clone(), value("REGION", "eu"), "").await?;
    let api_region = create(
        &mut client,
        &admin,
        api.clone(),
        overriding("REGION", "us"),
        "",
    )
    .await?;
    let zone = create(
        &mut client,
        &admin,
        api.clone(),
        alias("ZONE", "REGION"),
        "",
    )
    .await?;

    // Get and List per scope, ordered by key.
    let got = client
        .get_variable(with_token(
            pb::GetVariableRequest {
                id: config.id.clone(),
            },
            &admin,
        ))
        .await?
        .into_inner()
        .variable
        .unwrap();
    assert_eq!(got, config);
    let on_api = list(&mut client, &admin, ListScope::ServiceId(w.api.clone())).await?;
    let keys: Vec<&str> = on_api.iter().map(|v| v.key.as_str()).collect();
    assert_eq!(keys, ["CONFIG", "PG_HOST", "REGION", "ZONE"]);
    let on_env = list(
        &mut client,
        &admin,
        ListScope::EnvironmentId(w.environment.id.clone()),
    )
    .await?;
    assert_eq!(on_env, vec![debug.clone(), region.clone()]);
    // Filters and pages.
    let aliases = client
        .list_variables(with_token(
            pb::ListVariablesRequest {
                scope: Some(ListScope::ServiceId(w.api.clone())),
                kind: pb::VariableKind::Alias.into(),
                ..Default::default()
            },
            &admin,
        ))
        .await?
        .into_inner()
        .variables;
    assert_eq!(aliases, vec![pg.clone(), zone.clone()]);
    let mut token = String::new();
    let mut walked = Vec::new();
    loop {
        let page = client
            .list_variables(with_token(
                pb::ListVariablesRequest {
                    scope: Some(ListScope::ServiceId(w.api.clone())),
                    page_size: 3,
                    page_token: token.clone(),
                    ..Default::default()
                },
                &admin,
            ))
            .await?
            .into_inner();
        walked.extend(page.variables);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(walked, on_api);

    // Effective variables: narrowest wins, each with its source.
    let vars = effective(&mut client, &admin, &w.api).await?;
    let keys: Vec<&str> = vars.iter().map(|v| v.key.as_str()).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted, "ordered by key");
    let level_now = find(&vars, "LOG_LEVEL");
    assert_eq!(level_now.value, "debug");
    let source = level_now.source.clone().unwrap();
    assert_eq!(source.scope, i32::from(pb::VariableScope::Environment));
    assert_eq!(source.scope_id, w.environment.id);
    assert_eq!(source.variable_id, debug.id);
    assert_eq!(source.kind, i32::from(pb::VariableKind::Override));
    let region_now = find(&vars, "REGION");
    assert_eq!(region_now.value, "us");
    assert_eq!(
        region_now.source.clone().unwrap().variable_id,
        api_region.id
    );
    let zone_now = find(&vars, "ZONE");
    assert_eq!(zone_now.value, "us");
    assert_eq!(zone_now.alias_target_key, "REGION");
    assert_eq!(
        zone_now.source.clone().unwrap().kind,
        i32::from(pb::VariableKind::Alias)
    );
    assert_eq!(find(&vars, "PG_HOST").value, "postgres");
    assert_eq!(find(&vars, "SLIPWAY_POSTGRES_PORT").value, "5432");
    assert_eq!(find(&vars, "SLIPWAY_API_PORT").value, "8080");
    assert_eq!(find(&vars, "SLIPWAY_SERVICE_NAME").value, "api");
    assert_eq!(find(&vars, "SLIPWAY_ENVIRONMENT_MODE").value, "DEVELOPMENT");
    let builtin = find(&vars, "SLIPWAY_PROJECT_ID");
    assert_eq!(builtin.value, w.project.id);
    assert_eq!(
        builtin.source.clone().unwrap(),
        pb::VariableSource {
            scope: pb::VariableScope::BuiltIn.into(),
            ..Default::default()
        }
    );
    let config_now = find(&vars, "CONFIG");
    assert_eq!(config_now.file_mount_path, "/etc/app/config.json");
    assert_eq!(config_now.value, "{\"a\":1}");
    // The database service sees the project value overridden by the environment, and
    // none of api's own variables.
    let db_vars = effective(&mut client, &admin, &w.postgres).await?;
    assert_eq!(find(&db_vars, "LOG_LEVEL").value, "debug");
    assert_eq!(find(&db_vars, "REGION").value, "eu");
    assert!(db_vars.iter().all(|v| v.key != "CONFIG" && v.key != "ZONE"));

    // Update: a value with its etag; a stale etag; immutable and wrong-kind paths.
    let update =
        |id: &str, etag: &str, v: pb::Variable, paths: &[&str]| pb::UpdateVariableRequest {
            variable: Some(pb::Variable {
                id: id.into(),
                etag: etag.into(),
                ..v
            }),
            update_mask: mask(paths),
        };
    let updated = client
        .update_variable(with_token(
            update(&level.id, &level.etag, value("", "warn"), &["value"]),
            &admin,
        ))
        .await?
        .into_inner()
        .variable
        .unwrap();
    assert_eq!(updated.value, "warn");
    assert_eq!(updated.key, "LOG_LEVEL");
    assert_ne!(updated.etag, level.etag);
    let stale = client
        .update_variable(with_token(
            update(&level.id, &level.etag, value("", "error"), &["value"]),
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    for paths in [
        &["key"][..],
        &["kind"],
        &["is_secret"],
        &["alias_target_key"],
    ] {
        let refused = client
            .update_variable(with_token(
                update(&level.id, "", value("", "x"), paths),
                &admin,
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{paths:?}");
        assert_eq!(
            violations(&refused),
            vec!["update_mask.paths[0]"],
            "{paths:?}"
        );
    }
    let moved = client
        .update_variable(with_token(
            update(
                &config.id,
                "",
                file("", "/etc/app/other.json", ""),
                &["file_mount_path", "description"],
            ),
            &admin,
        ))
        .await?
        .into_inner()
        .variable
        .unwrap();
    assert_eq!(moved.file_mount_path, "/etc/app/other.json");
    assert_eq!(
        moved.value, "{\"a\":1}",
        "a path not in the mask keeps its value"
    );
    let bad_target = client
        .update_variable(with_token(
            update(&zone.id, "", alias("", "NOPE"), &["alias_target_key"]),
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_target.code(), Code::FailedPrecondition);

    // Delete: a definition others rely on needs force, which takes them along.
    let delete = |id: &str, force: bool| pb::DeleteVariableRequest {
        id: id.into(),
        etag: String::new(),
        force,
    };
    let refused = client
        .delete_variable(with_token(delete(&region.id, false), &admin))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let stale = client
        .delete_variable(with_token(
            pb::DeleteVariableRequest {
                id: level.id.clone(),
                etag: level.etag.clone(),
                force: true,
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    client
        .delete_variable(with_token(delete(&region.id, true), &admin))
        .await?;
    for gone in [&region.id, &api_region.id, &zone.id] {
        let status = client
            .get_variable(with_token(
                pb::GetVariableRequest { id: gone.clone() },
                &admin,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
    // An override has no dependants.
    client
        .delete_variable(with_token(delete(&debug.id, false), &admin))
        .await?;
    let vars = effective(&mut client, &admin, &w.api).await?;
    assert_eq!(find(&vars, "LOG_LEVEL").value, "warn");
    assert!(vars.iter().all(|v| v.key != "REGION" && v.key != "ZONE"));
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_variables_are_refused_and_nothing_is_written() -> TestResult {
    let h = Harness::start().await?;
    let w = world(&h, &h.a).await?;
    let admin = h.a.admin.clone();
    let mut client = variables(&h);
    let env = CreateScope::EnvironmentId(w.environment.id.clone());
    for (variable, field) in [
        (value("SLIPWAY_MINE", "x"), "variable.key"),
        (value("slipway_mine", "x"), "variable.key"),
        (value("1BAD", "x"), "variable.key"),
        (value("BAD-KEY", "x"), "variable.key"),
        (value("", "x"), "variable.key"),
        (
            pb::Variable {
                kind: 0,
                ..value("OK", "x")
            },
            "variable.kind",
        ),
        (alias("A", ""), "variable.alias_target_key"),
        (secret(alias("A", "B")), "variable.is_secret"),
        (file("F", "relative/path", ""), "variable.file_mount_path"),
        (file("F", "/etc/../passwd", ""), "variable.file_mount_path"),
        (
            pb::Variable {
                file_mount_path: "/x".into(),
                ..value("V", "x")
            },
            "variable.file_mount_path",
        ),
        (value("BIG", &"x".repeat(64 * 1024 + 1)), "variable.value"),
    ] {
        let status = create(&mut client, &admin, env.clone(), variable.clone(), "")
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{}", variable.key);
        assert_eq!(violations(&status), vec![field], "{}", variable.key);
    }
    let no_scope = client
        .create_variable(with_token(
            pb::CreateVariableRequest {
                scope: None,
                variable: Some(value("OK", "x")),
                request_id: String::new(),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(no_scope.code(), Code::InvalidArgument);
    assert_eq!(violations(&no_scope), vec!["scope"]);
    // Chain rules: an override needs a wider definition, an alias a known target.
    let orphan = create(
        &mut client,
        &admin,
        env.clone(),
        overriding("NOWHERE", "x"),
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(orphan.code(), Code::FailedPrecondition);
    let lost = create(
        &mut client,
        &admin,
        env.clone(),
        alias("TARGETLESS", "MISSING"),
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(lost.code(), Code::FailedPrecondition);
    // An alias cannot reach down to a narrower scope's key either.
    create(
        &mut client,
        &admin,
        CreateScope::ServiceId(w.api.clone()),
        value("LOCAL", "x"),
        "",
    )
    .await?;
    let narrower = create(&mut client, &admin, env.clone(), alias("UP", "LOCAL"), "")
        .await
        .unwrap_err();
    assert_eq!(narrower.code(), Code::FailedPrecondition);
    // A secret's override must be secret too.
    create(
        &mut client,
        &admin,
        CreateScope::ProjectId(w.project.id.clone()),
        secret(value("TOKEN", "t0p")),
        "",
    )
    .await?;
    let plain = create(
        &mut client,
        &admin,
        env.clone(),
        overriding("TOKEN", "open"),
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(plain.code(), Code::FailedPrecondition);
    // An unknown scope.
    let missing = create(
        &mut client,
        &admin,
        CreateScope::EnvironmentId(new_id()),
        value("OK", "x"),
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    // Nothing was written in the environment.
    let on_env = list(
        &mut client,
        &admin,
        ListScope::EnvironmentId(w.environment.id.clone()),
    )
    .await?;
    assert!(on_env.is_empty(), "{on_env:?}");
    let store = Store::new(h.platform.db.clone());
    let all = store
        .list_all(
            Kind::Variable,
            &slipway_catalog::store::Filter {
                organization_id: h.a.id.clone(),
                ..Default::default()
            },
        )
        .await?;
    let mut keys: Vec<&str> = all.iter().map(|row| row.name.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["LOCAL", "TOKEN"]);
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_never_read_back_and_only_the_snapshot_has_them() -> TestResult {
    let (h, service_token) = Harness::start_with_service().await?;
    let w = world(&h, &h.a).await?;
    let admin = h.a.admin.clone();
    let mut client = variables(&h);
    let mut events = h
        .platform
        .bus
        .subscribe("slipway.events.catalog.variable.>")
        .await?;
    let plaintext = "hunter2-very-secret-value";
    let key = create(
        &mut client,
        &admin,
        CreateScope::ProjectId(w.project.id.clone()),
        secret(value("API_KEY", plaintext)),
        "",
    )
    .await?;
    assert!(key.is_secret);
    assert!(key.value.is_empty(), "create answers without the value");
    let file_secret = "-----BEGIN KEY----- file-secret-content";
    create(
        &mut client,
        &admin,
        CreateScope::ServiceId(w.api.clone()),
        secret(file("TLS_KEY", "/etc/tls/key.pem", file_secret)),
        "",
    )
    .await?;
    let override_secret = "environment-override-secret";
    create(
        &mut client,
        &admin,
        CreateScope::EnvironmentId(w.environment.id.clone()),
        secret(overriding("API_KEY", override_secret)),
        "",
    )
    .await?;
    create(
        &mut client,
        &admin,
        CreateScope::ServiceId(w.api.clone()),
        alias("KEY_COPY", "API_KEY"),
        "",
    )
    .await?;
    create(
        &mut client,
        &admin,
        CreateScope::ProjectId(w.project.id.clone()),
        value("PLAIN", "visible"),
        "",
    )
    .await?;
    let secrets = [plaintext, file_secret, override_secret];
    let holds = |bytes: &[u8], secret: &str| {
        bytes
            .windows(secret.len())
            .any(|window| window == secret.as_bytes())
    };

    // One event per variable, never carrying a value.
    for expected in ["API_KEY", "TLS_KEY", "API_KEY", "KEY_COPY", "PLAIN"] {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
            .await?
            .unwrap();
        assert_eq!(message.subject, "slipway.events.catalog.variable.created");
        for secret in secrets {
            assert!(!holds(&message.payload, secret));
        }
        let event = <slipway_proto::events::v1::Event as prost::Message>::decode(message.payload)?;
        assert_eq!(event.r#type, "catalog.variable.created");
        match event.payload {
            Some(slipway_proto::events::v1::event::Payload::VariableCreated(created)) => {
                assert_eq!(created.key, expected);
                assert_eq!(created.project_id, w.project.id);
                assert_eq!(
                    created.is_secret,
                    expected != "PLAIN" && expected != "KEY_COPY"
                );
            }
            other => panic!("unexpected event {other:?}"),
        }
    }

    // The raw rows never hold the plaintext, in spec or sealed.
    let store = Store::new(h.platform.db.clone());
    let rows = store
        .list_all(
            Kind::Variable,
            &slipway_catalog::store::Filter {
                organization_id: h.a.id.clone(),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(rows.len(), 5);
    for row in &rows {
        let raw = store.get(Kind::Variable, &row.id).await?;
        for secret in secrets {
            assert!(!holds(&raw.spec, secret), "{} spec", raw.name);
            assert!(
                !holds(raw.sealed.as_deref().unwrap_or_default(), secret),
                "{} sealed",
                raw.name
            );
        }
        let is_secret = ["API_KEY", "TLS_KEY"].contains(&raw.name.as_str());
        assert_eq!(raw.sealed.is_some(), is_secret, "{}", raw.name);
    }

    // No read RPC returns them.
    let mut read = Vec::new();
    for scope in [
        ListScope::ProjectId(w.project.id.clone()),
        ListScope::EnvironmentId(w.environment.id.clone()),
        ListScope::ServiceId(w.api.clone()),
    ] {
        read.extend(list(&mut client, &admin, scope).await?);
    }
    assert_eq!(read.len(), 5);
    for variable in &read {
        let got = client
            .get_variable(with_token(
                pb::GetVariableRequest {
                    id: variable.id.clone(),
                },
                &admin,
            ))
            .await?
            .into_inner()
            .variable
            .unwrap();
        assert_eq!(&got, variable);
        if variable.is_secret {
            assert!(variable.value.is_empty(), "{}", variable.key);
        }
        for secret in secrets {
            assert!(!format!("{got:?}").contains(secret));
        }
    }
    let vars = effective(&mut client, &admin, &w.api).await?;
    for secret in secrets {
        assert!(!format!("{vars:?}").contains(secret));
    }
    for key in ["API_KEY", "TLS_KEY", "KEY_COPY"] {
        let var = find(&vars, key);
        assert!(var.is_secret, "{key}");
        assert!(var.value.is_empty(), "{key}");
    }
    assert_eq!(find(&vars, "PLAIN").value, "visible");
    assert_eq!(find(&vars, "TLS_KEY").file_mount_path, "/etc/tls/key.pem");

    // A user token, even an ADMIN or OWNER one, may not take the snapshot.
    let request = || pb::GetEnvironmentSnapshotRequest {
        environment_id: w.environment.id.clone(),
        service_ids: Vec::new(),
    };
    let owner = h.builtin(&h.a.id, BuiltinRole::Owner).await?;
    for token in [&admin, &owner] {
        let denied = internal(&h)
            .get_environment_snapshot(with_token(request(), token))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
    }
    let outsider = internal(&h)
        .get_environment_snapshot(with_token(request(), &h.b.admin))
        .await
        .unwrap_err();
    assert_eq!(outsider.code(), Code::PermissionDenied);

    // The cluster's build registry comes with its password: builds push there.
    let build_registry = pb::registry_service_client::RegistryServiceClient::new(h.channel.clone())
        .create_registry(with_token(
            pb::CreateRegistryRequest {
                organization_id: h.a.id.clone(),
                registry: Some(pb::Registry {
                    name: "builds".into(),
                    kind: pb::RegistryKind::Generic.into(),
                    url: "https://registry.example.com".into(),
                    username: "builder".into(),
                    password: "registry-password".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            &admin,
        ))
        .await?
        .into_inner()
        .registry
        .unwrap();
    pb::cluster_service_client::ClusterServiceClient::new(h.channel.clone())
        .update_cluster(with_token(
            pb::UpdateClusterRequest {
                cluster: Some(pb::Cluster {
                    id: w.environment.cluster_id.clone(),
                    build_registry_id: build_registry.id.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["build_registry_id"]),
            },
            &admin,
        ))
        .await?;

    // The control plane gets everything, secrets decrypted.
    let snapshot = internal(&h)
        .get_environment_snapshot(with_token(request(), &service_token))
        .await?
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(snapshot.environment.unwrap().id, w.environment.id);
    assert_eq!(snapshot.project.unwrap().id, w.project.id);
    assert_eq!(snapshot.cluster.unwrap().id, w.environment.cluster_id);
    assert!(snapshot.snapshot_time.is_some());
    let registries: Vec<(String, String)> = snapshot
        .registries
        .iter()
        .map(|r| (r.registry.clone().unwrap().id, r.password.clone()))
        .collect();
    assert_eq!(
        registries,
        [(build_registry.id.clone(), "registry-password".to_owned())]
    );
    let names: Vec<String> = snapshot
        .services
        .iter()
        .map(|s| s.service.clone().unwrap().name)
        .collect();
    assert_eq!(names, ["api", "postgres"]);
    let api = &snapshot.services[0];
    assert_eq!(find(&api.variables, "API_KEY").value, override_secret);
    assert!(find(&api.variables, "API_KEY").is_secret);
    assert_eq!(find(&api.variables, "KEY_COPY").value, override_secret);
    assert_eq!(find(&api.variables, "TLS_KEY").value, file_secret);
    assert_eq!(find(&api.variables, "PLAIN").value, "visible");
    let db = &snapshot.services[1];
    assert_eq!(find(&db.variables, "API_KEY").value, override_secret);
    assert!(db.variables.iter().all(|v| v.key != "TLS_KEY"));

    // Only some services; an id not in the environment is NOT_FOUND.
    let some = internal(&h)
        .get_environment_snapshot(with_token(
            pb::GetEnvironmentSnapshotRequest {
                environment_id: w.environment.id.clone(),
                service_ids: vec![w.postgres.clone()],
            },
            &service_token,
        ))
        .await?
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(some.services.len(), 1);
    assert!(find(&some.services[0].variables, "SLIPWAY_API_HOST").value == "api");
    let stranger = internal(&h)
        .get_environment_snapshot(with_token(
            pb::GetEnvironmentSnapshotRequest {
                environment_id: w.environment.id.clone(),
                service_ids: vec![new_id()],
            },
            &service_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), Code::NotFound);

    // Updating a secret's value seals the new one.
    let updated_secret = "rotated-secret-value";
    let updated = client
        .update_variable(with_token(
            pb::UpdateVariableRequest {
                variable: Some(pb::Variable {
                    id: key.id.clone(),
                    value: updated_secret.into(),
                    ..Default::default()
                }),
                update_mask: mask(&["value"]),
            },
            &admin,
        ))
        .await?
        .into_inner()
        .variable
        .unwrap();
    assert!(updated.value.is_empty() && updated.is_secret);
    let raw = store.get(Kind::Variable, &key.id).await?;
    assert!(!holds(&raw.spec, updated_secret));
    assert!(!holds(
        raw.sealed.as_deref().unwrap_or_default(),
        updated_secret
    ));
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_organizations_see_nothing_and_viewers_cannot_write() -> TestResult {
    let h = Harness::start().await?;
    let w = world(&h, &h.a).await?;
    let admin = h.a.admin.clone();
    let mut client = variables(&h);
    let var = create(
        &mut client,
        &admin,
        CreateScope::EnvironmentId(w.environment.id.clone()),
        value("COLOR", "blue"),
        "",
    )
    .await?;
    let project_var = create(
        &mut client,
        &admin,
        CreateScope::ProjectId(w.project.id.clone()),
        value("SHAPE", "round"),
        "",
    )
    .await?;

    // Organization B gets NOT_FOUND for everything of A's.
    let b = h.b.admin.clone();
    for id in [&var.id, &project_var.id] {
        let status = client
            .get_variable(with_token(pb::GetVariableRequest { id: id.clone() }, &b))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        let status = client
            .update_variable(with_token(
                pb::UpdateVariableRequest {
                    variable: Some(pb::Variable {
                        id: id.clone(),
                        value: "red".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["value"]),
                },
                &b,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        let status = client
            .delete_variable(with_token(
                pb::DeleteVariableRequest {
                    id: id.clone(),
                    ..Default::default()
                },
                &b,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
    for scope in [
        ListScope::ProjectId(w.project.id.clone()),
        ListScope::EnvironmentId(w.environment.id.clone()),
        ListScope::ServiceId(w.api.clone()),
    ] {
        let status = list(&mut client, &b, scope).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
    let status = create(
        &mut client,
        &b,
        CreateScope::ProjectId(w.project.id.clone()),
        value("MINE", "x"),
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = effective(&mut client, &b, &w.api).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // A VIEWER of A reads but does not write.
    let viewer = h.builtin(&h.a.id, BuiltinRole::Viewer).await?;
    let read = client
        .get_variable(with_token(
            pb::GetVariableRequest { id: var.id.clone() },
            &viewer,
        ))
        .await?
        .into_inner()
        .variable
        .unwrap();
    assert_eq!(read, var);
    assert_eq!(
        list(
            &mut client,
            &viewer,
            ListScope::ProjectId(w.project.id.clone())
        )
        .await?
        .len(),
        1
    );
    assert!(!effective(&mut client, &viewer, &w.api).await?.is_empty());
    for scope in [
        CreateScope::ProjectId(w.project.id.clone()),
        CreateScope::EnvironmentId(w.environment.id.clone()),
        CreateScope::ServiceId(w.api.clone()),
    ] {
        let status = create(&mut client, &viewer, scope, value("NEW", "x"), "")
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    let status = client
        .update_variable(with_token(
            pb::UpdateVariableRequest {
                variable: Some(pb::Variable {
                    id: var.id.clone(),
                    value: "red".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["value"]),
            },
            &viewer,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = client
        .delete_variable(with_token(
            pb::DeleteVariableRequest {
                id: var.id.clone(),
                ..Default::default()
            },
            &viewer,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // A DEVOPS member writes.
    let devops = h.builtin(&h.a.id, BuiltinRole::Devops).await?;
    create(
        &mut client,
        &devops,
        CreateScope::ServiceId(w.api.clone()),
        value("BY_DEVOPS", "x"),
        "",
    )
    .await?;
    h.stop().await
}

/// The snapshot's cluster carries its connection as ClusterService shows it: awaiting an
/// agent, connected after a fresh report, disconnected once the heartbeat is stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_cluster_carries_its_connection() -> TestResult {
    let (h, service_token) = Harness::start_with_service().await?;
    let w = world(&h, &h.a).await?;
    let cluster_id = w.environment.cluster_id.clone();
    let connection = || async {
        let snapshot = internal(&h)
            .get_environment_snapshot(with_token(
                pb::GetEnvironmentSnapshotRequest {
                    environment_id: w.environment.id.clone(),
                    service_ids: Vec::new(),
                },
                &service_token,
            ))
            .await?
            .into_inner()
            .snapshot
            .ok_or("no snapshot")?;
        let cluster = snapshot.cluster.ok_or("no cluster")?;
        assert_eq!(cluster.id, cluster_id);
        Ok::<_, BoxError>(cluster.connection.ok_or("no connection")?)
    };
    let state = |c: &pb::ClusterConnection| pb::ClusterConnectionState::try_from(c.state);

    let awaiting = connection().await?;
    assert_eq!(state(&awaiting)?, pb::ClusterConnectionState::AwaitingAgent);

    let now = chrono::Utc::now();
    let heartbeat = prost_types::Timestamp {
        seconds: now.timestamp(),
        nanos: 0,
    };
    internal(&h)
        .report_cluster_connection(with_token(
            pb::ReportClusterConnectionRequest {
                cluster_id: cluster_id.clone(),
                connected: true,
                heartbeat_time: Some(heartbeat),
                agent_version: "1.4.2".into(),
            },
            &service_token,
        ))
        .await?;
    let connected = connection().await?;
    assert_eq!(state(&connected)?, pb::ClusterConnectionState::Connected);
    assert!(connected.agent_connected);
    assert_eq!(connected.agent_version, "1.4.2");
    assert_eq!(connected.last_heartbeat_time, Some(heartbeat));

    // A report older than the heartbeat timeout reads as disconnected, as it does in
    // ClusterService.
    let store = Store::new(h.platform.db.clone());
    let mut stale = store
        .cluster_connection(&cluster_id)
        .await?
        .ok_or("no connection row")?;
    stale.last_heartbeat_time = Some(now - chrono::Duration::minutes(10));
    store.put_cluster_connection(&stale).await?;
    let disconnected = connection().await?;
    assert_eq!(
        state(&disconnected)?,
        pb::ClusterConnectionState::Disconnected
    );
    assert!(!disconnected.agent_connected);
    h.stop().await
}
