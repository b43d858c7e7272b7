//! Talking to the API server: server-side apply with field manager `slipway-agent`, scaling,
//! suspending and deleting by label. Every call maps its error to a [`CommandFailure`] with
//! the object it was about, so a report says what could not be done.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use slipway_proto::agent::v1 as pb;

use super::objects::FIELD_MANAGER;
use crate::runtime::CommandFailure;

/// Server-side apply of the namespaced object `object`, forcing ownership of fields another
/// manager changed (a `kubectl scale`, the agent's own stop): the command is the truth.
pub async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K, CommandFailure>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + Debug + Serialize + DeserializeOwned,
    K::DynamicType: Default,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.patch(&name, &apply_params(), &Patch::Apply(object))
        .await
        .map_err(|error| api_failure(&format!("apply {} {name}", kind_of::<K>()), error))
}

/// Server-side apply of the command's namespace (created when missing).
pub async fn apply_namespace(client: &Client, namespace: &Namespace) -> Result<(), CommandFailure> {
    let name = namespace.metadata.name.clone().unwrap_or_default();
    let api: Api<Namespace> = Api::all(client.clone());
    api.patch(&name, &apply_params(), &Patch::Apply(namespace))
        .await
        .map(drop)
        .map_err(|error| api_failure(&format!("apply namespace {name}"), error))
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Sets the replicas of the Deployment or StatefulSet `name` through its scale subresource
/// (a merge patch: an apply naming only `replicas` would drop the rest of what the agent
/// owns). `Ok(false)` when it does not exist, which for a stop means done.
pub async fn scale<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    replicas: i32,
) -> Result<bool, CommandFailure>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + Debug + DeserializeOwned,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({ "spec": { "replicas": replicas } });
    match api
        .patch_scale(name, &merge_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(error) if is_not_found(&error) => Ok(false),
        Err(error) => Err(api_failure(
            &format!("scale {} {name}", kind_of::<K>()),
            error,
        )),
    }
}

/// Merge-patches the object `name`; `Ok(false)` when it does not exist.
pub async fn merge<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    patch: &serde_json::Value,
) -> Result<bool, CommandFailure>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + Debug + DeserializeOwned,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.patch(name, &merge_params(), &Patch::Merge(patch)).await {
        Ok(_) => Ok(true),
        Err(error) if is_not_found(&error) => Ok(false),
        Err(error) => Err(api_failure(
            &format!("patch {} {name}", kind_of::<K>()),
            error,
        )),
    }
}

fn merge_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

/// Deletes the object `name` if it exists (a fixed-size application drops its autoscaler).
pub async fn delete_one<K>(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<(), CommandFailure>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + Debug + DeserializeOwned,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(error) if is_not_found(&error) => Ok(()),
        Err(error) => Err(api_failure(
            &format!("delete {} {name}", kind_of::<K>()),
            error,
        )),
    }
}

/// Deletes every object of type `K` matching `selector` in `namespace`; background
/// propagation so a Job's or Deployment's pods go with it.
pub async fn delete_labelled<K>(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Result<(), CommandFailure>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + Debug + DeserializeOwned,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api
        .delete_collection(
            &DeleteParams::background(),
            &ListParams::default().labels(selector),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if is_not_found(&error) => Ok(()),
        Err(error) => Err(api_failure(
            &format!("delete {} labelled {selector}", kind_of::<K>()),
            error,
        )),
    }
}

/// Deletes every kind of object the agent creates for a workload, controllers first so no
/// pod is recreated while its configuration disappears, volume claims included.
pub async fn delete_workload_objects(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Result<(), CommandFailure> {
    delete_labelled::<CronJob>(client, namespace, selector).await?;
    delete_labelled::<Job>(client, namespace, selector).await?;
    delete_labelled::<HorizontalPodAutoscaler>(client, namespace, selector).await?;
    delete_labelled::<Deployment>(client, namespace, selector).await?;
    delete_labelled::<StatefulSet>(client, namespace, selector).await?;
    delete_labelled::<Ingress>(client, namespace, selector).await?;
    // Services have no deletecollection verb: delete them one by one.
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let listed = services
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|error| api_failure("list services", error))?;
    for service in listed.items {
        if let Some(name) = service.metadata.name {
            delete_one::<Service>(client, namespace, &name).await?;
        }
    }
    delete_labelled::<PersistentVolumeClaim>(client, namespace, selector).await?;
    delete_labelled::<Secret>(client, namespace, selector).await?;
    delete_labelled::<ConfigMap>(client, namespace, selector).await?;
    Ok(())
}

/// Deletes the namespace and everything left in it; a missing one is already deleted.
pub async fn delete_namespace(client: &Client, namespace: &str) -> Result<(), CommandFailure> {
    let api: Api<Namespace> = Api::all(client.clone());
    match api.delete(namespace, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(error) if is_not_found(&error) => Ok(()),
        Err(error) => Err(api_failure(&format!("delete namespace {namespace}"), error)),
    }
}

/// Whether the API answered 404.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// A failure for an API call about `what`: a rejected object (400, 422) is an invalid spec,
/// anything else a runtime error. Messages are lowercase (report.proto).
pub fn api_failure(what: &str, error: kube::Error) -> CommandFailure {
    let (reason, detail) = match &error {
        kube::Error::Api(status) if matches!(status.code, 400 | 422) => {
            (pb::FailureReason::InvalidSpec, status.message.clone())
        }
        kube::Error::Api(status) => (
            pb::FailureReason::RuntimeError,
            format!("{} ({})", status.message, status.code),
        ),
        other => (pb::FailureReason::RuntimeError, other.to_string()),
    };
    CommandFailure::new(reason, super::clip(&format!("{what}: {detail}")))
}

fn kind_of<K: Resource>() -> String
where
    K::DynamicType: Default,
{
    K::kind(&K::DynamicType::default()).to_lowercase()
}
