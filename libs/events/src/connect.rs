//! From the `[nats]` settings section to a running bus with its streams in place.

use std::sync::Arc;

use slipway_config::NatsSettings;

use crate::{BusSettings, EventBus, EventsError, InMemoryBus, JetStreamBus, Namespace, StreamKind};

/// The bus settings a service runs with: defaults, plus what operators may tune in
/// `[nats]` (namespace, LOGS retention).
pub fn bus_settings(nats: &NatsSettings) -> Result<BusSettings, EventsError> {
    let mut settings = BusSettings::default().with_namespace(Namespace::new(&nats.namespace)?);
    let logs = settings.stream_mut(StreamKind::Logs);
    logs.max_age = Some(nats.logs_max_age);
    logs.max_bytes = Some(nats.logs_max_bytes);
    settings.validate()?;
    Ok(settings)
}

/// Connects to NATS JetStream and creates (or updates) the streams.
pub async fn connect(nats: &NatsSettings) -> Result<Arc<dyn EventBus>, EventsError> {
    let bus = JetStreamBus::connect(&nats.url, bus_settings(nats)?).await?;
    bus.ensure_streams().await?;
    Ok(Arc::new(bus))
}

/// The in-process bus of the embedded mode (`slipway dev`), with its streams created.
pub async fn in_memory(nats: &NatsSettings) -> Result<Arc<dyn EventBus>, EventsError> {
    let bus = InMemoryBus::new(bus_settings(nats)?)?;
    bus.ensure_streams().await?;
    Ok(Arc::new(bus))
}
