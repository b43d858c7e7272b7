#![forbid(unsafe_code)]
//! Slipway's v1 API: the Rust code generated from `proto/` and the one place where errors
//! become `tonic::Status`.
//!
//! Generated modules follow the proto packages: `slipway.catalog.v1` is
//! [`catalog::v1`], and so on.

mod error;

pub use error::{ApiError, AuthFailure, ERROR_DOMAIN, FieldViolation, PreconditionViolation};

#[allow(
    clippy::all,
    clippy::pedantic,
    rustdoc::all,
    missing_docs,
    reason = "generated code"
)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/slipway_protos.rs"));
}

pub use generated::slipway::*;

/// The encoded `FileDescriptorSet` of every Slipway proto, for gRPC server reflection and
/// for tools that need to know the full API (the list of services a binary must serve).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/slipway_descriptor.bin"));

fn descriptor_set() -> Option<prost_types::FileDescriptorSet> {
    use prost::Message as _;
    prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).ok()
}

/// The method names of the gRPC service `service` (fully qualified, e.g.
/// `slipway.catalog.v1.ProjectService`), in declaration order; empty if there is none.
pub fn service_methods(service: &str) -> Vec<String> {
    let Some(set) = descriptor_set() else {
        return Vec::new();
    };
    set.file
        .iter()
        .flat_map(|file| {
            file.service.iter().filter(move |candidate| {
                format!("{}.{}", file.package(), candidate.name()) == service
            })
        })
        .flat_map(|found| found.method.iter().map(|method| method.name().to_owned()))
        .collect()
}

/// Fully qualified names of the gRPC services declared in `package` (for example
/// `slipway.catalog.v1`), read from [`FILE_DESCRIPTOR_SET`].
pub fn services_in_package(package: &str) -> Vec<String> {
    let Some(set) = descriptor_set() else {
        return Vec::new();
    };
    let mut names: Vec<String> = set
        .file
        .iter()
        .filter(|file| file.package() == package)
        .flat_map(|file| {
            file.service
                .iter()
                .map(move |service| format!("{}.{}", file.package(), service.name()))
        })
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_set_names_services_of_a_package() {
        let services = services_in_package("slipway.catalog.v1");
        assert!(
            services.contains(&"slipway.catalog.v1.ProjectService".to_owned()),
            "{services:?}"
        );
        assert!(services_in_package("slipway.nothing.v1").is_empty());
        let methods = service_methods("slipway.catalog.v1.ProjectService");
        assert!(methods.contains(&"CreateProject".to_owned()), "{methods:?}");
        assert!(service_methods("slipway.catalog.v1.Nothing").is_empty());
    }
}
