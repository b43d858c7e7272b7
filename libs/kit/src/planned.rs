//! Routes for gRPC services that are part of the API contract but not built yet.
//!
//! Without them a client would get tonic's bare `UNIMPLEMENTED` with no explanation; with
//! them every method of a planned service answers `UNIMPLEMENTED`, a sentence naming the
//! method and what is missing, and `ErrorInfo` reason `NOT_IMPLEMENTED`.

use slipway_proto::ApiError;

/// Adds a catch-all route for every method of `service` (fully qualified name).
pub(crate) fn add_planned_service(router: &mut axum::Router, service: &str, sentence: &str) {
    let sentence = sentence.to_owned();
    let path = format!("/{service}/{{*method}}");
    let taken = std::mem::take(router);
    *router = taken.route(
        &path,
        axum::routing::any(move |uri: http::Uri| {
            let sentence = sentence.clone();
            async move {
                let method = uri.path().trim_start_matches('/').to_owned();
                let status: tonic::Status =
                    ApiError::Unimplemented(format!("{method} is not built yet: {sentence}"))
                        .into();
                status.into_http::<axum::body::Body>()
            }
        }),
    );
}
