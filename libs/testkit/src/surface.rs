//! The standard surface every Slipway server must show, checked the same way for the
//! binaries and for the in-process sandbox.

use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::grpc;

/// The services a server owning `packages` must list through reflection: every service of
/// those packages, plus health and both reflection versions.
pub fn expected_services(packages: &[&str]) -> Vec<String> {
    let mut names = slipway_services(packages);
    names.extend(
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]
        .map(str::to_owned),
    );
    names.sort();
    names
}

/// The Slipway services of `packages` (without health and reflection), sorted.
pub fn slipway_services(packages: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = packages
        .iter()
        .flat_map(|package| slipway_proto::services_in_package(package))
        .collect();
    names.sort();
    names
}

/// Checks health (SERVING), reflection v1 and v1alpha (exactly [`expected_services`]), and
/// that every method of every service in `not_built` answers `UNIMPLEMENTED` with a
/// sentence naming the method. Returns a description of the first mismatch.
pub async fn check_surface(
    channel: Channel,
    packages: &[&str],
    not_built: &[&str],
) -> Result<(), String> {
    let status = grpc::health(channel.clone(), "")
        .await
        .map_err(|status| format!("health check failed: {status}"))?;
    if status != ServingStatus::Serving {
        return Err(format!("health is {status:?}, not SERVING"));
    }
    let expected = expected_services(packages);
    let listed = grpc::reflection_services(channel.clone())
        .await
        .map_err(|status| format!("reflection v1 failed: {status}"))?;
    if listed != expected {
        return Err(format!(
            "reflection v1 lists {listed:?}, expected {expected:?}"
        ));
    }
    let listed = grpc::reflection_services_v1alpha(channel.clone())
        .await
        .map_err(|status| format!("reflection v1alpha failed: {status}"))?;
    if listed != expected {
        return Err(format!(
            "reflection v1alpha lists {listed:?}, expected {expected:?}"
        ));
    }
    for service in not_built {
        let methods = slipway_proto::service_methods(service);
        if methods.is_empty() {
            return Err(format!("{service} has no methods in the descriptor set"));
        }
        for method in methods {
            let path = format!("/{service}/{method}");
            let status = grpc::call_with_empty_request(channel.clone(), &path).await;
            let sentence = format!("{}/{method} is not built yet: ", service);
            if status.code() != tonic::Code::Unimplemented
                || !status.message().starts_with(&sentence)
            {
                return Err(format!(
                    "{path} answered {:?} {:?}, expected UNIMPLEMENTED starting with {sentence:?}",
                    status.code(),
                    status.message()
                ));
            }
        }
    }
    Ok(())
}

/// Starts the service binary at `binary` the way a script would — `--listen 127.0.0.1:0`,
/// this test's PostgreSQL database and NATS namespace in `SLIPWAY__…` variables when
/// `needs_platform` — checks [`check_surface`] with every service of `packages` not built
/// yet except `built`, then stops it with SIGTERM and expects a clean exit.
pub async fn check_service_binary(
    binary: &str,
    packages: &[&str],
    built: &[&str],
    needs_platform: bool,
) -> Result<(), String> {
    check_service_binary_with(binary, packages, built, needs_platform, &[]).await
}

/// [`check_service_binary`] with settings of the service's own (`extra_env`, as
/// `SLIPWAY__SECTION__KEY` pairs), such as catalog's master key.
pub async fn check_service_binary_with(
    binary: &str,
    packages: &[&str],
    built: &[&str],
    needs_platform: bool,
    extra_env: &[(&str, &str)],
) -> Result<(), String> {
    let (database, nats) = if needs_platform {
        (
            Some(
                crate::TestDatabase::postgres()
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            Some(crate::TestNats::start().await.map_err(|e| e.to_string())?),
        )
    } else {
        (None, None)
    };
    let mut env = Vec::new();
    if let (Some(database), Some(nats)) = (&database, &nats) {
        env.push(("SLIPWAY__DATABASE__URL", database.url()));
        env.push(("SLIPWAY__NATS__URL", nats.url()));
        env.push(("SLIPWAY__NATS__NAMESPACE", nats.namespace()));
        // Services resolve callers through identity on a lazily connecting channel; the
        // surface checks never authenticate, so an address nothing listens on will do.
        env.push(("SLIPWAY__AUTH__IDENTITY_URL", "http://127.0.0.1:9"));
    }
    env.extend_from_slice(extra_env);
    let process = crate::binary::ServiceProcess::start(binary, &[], &env)
        .await
        .map_err(|e| e.to_string())?;
    let not_built: Vec<String> = slipway_services(packages)
        .into_iter()
        .filter(|service| !built.contains(&service.as_str()))
        .collect();
    let not_built: Vec<&str> = not_built.iter().map(String::as_str).collect();
    let checked = check_surface(grpc::channel(process.addr()), packages, &not_built).await;
    let exit = process.terminate().await.map_err(|e| e.to_string())?;
    checked?;
    if !exit.success() {
        return Err(format!("{binary} exited with {exit} after SIGTERM"));
    }
    Ok(())
}
