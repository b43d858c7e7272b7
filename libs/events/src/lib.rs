//! Slipway's event bus: NATS JetStream streams, subjects, deduplicated publishing,
//! durable pull consumers and W3C trace context — plus an in-memory bus with the same
//! semantics for the embedded single-process mode.
//!
//! # Shape
//!
//! * [`EventBus`] — the object-safe trait services hold as `Arc<dyn EventBus>`: raw bytes,
//!   logical subjects. [`JetStreamBus`] is the production implementation, [`InMemoryBus`]
//!   the embedded one; both pass one contract test suite (`tests/contract.rs`).
//! * [`EventBusExt`] — typed protobuf publishing that sets `Nats-Msg-Id` and injects the
//!   current trace context, as DESIGN.md requires of every publish;
//!   [`Delivery::decode`] and [`Delivery::set_parent_of`] on the way in.
//! * [`StreamKind`] — the four streams of DESIGN.md (`EVENTS`, `BUILDS` and `AGENT` as work
//!   queues, `LOGS`), tuned through [`BusSettings`]; [`subject`] builds their subjects.
//! * [`EventBus::notify`] — ephemeral core-NATS notices on `slipway.notices.…`, outside
//!   every stream, for what only live subscribers care about.
//! * [`Namespace`] — a prefix on stream names and subjects that isolates parallel tests
//!   sharing one server; empty in production.
//!
//! # Delivery guarantees
//!
//! At least once. A publish is stored once per message id within the duplicate window, so
//! publishers may retry freely; a delivery that is not acknowledged within the ack wait
//! comes back (to any handle of the durable), so handlers must be idempotent — key them on
//! [`Delivery::message_id`]. Messages of one subject are delivered in publish order (a
//! redelivery may of course arrive after later messages).

#![forbid(unsafe_code)]

mod bus;
mod connect;
mod error;
mod headers;
mod jetstream;
mod memory;
mod namespace;
mod read;
mod settings;
pub mod subject;
mod typed;

pub use bus::{
    Consumer, ConsumerSpec, DeliverFrom, Delivery, EventBus, LiveMessage, PublishAck,
    StoredMessage, StreamInfo, Subscription,
};
pub use connect::{bus_settings, connect, in_memory};
pub use error::{BoxError, EventsError};
pub use headers::{Headers, MSG_ID_HEADER};
pub use jetstream::JetStreamBus;
pub use memory::InMemoryBus;
pub use namespace::Namespace;
pub use read::{ReadFrom, Reader, StoredRecord};
pub use settings::{BusSettings, Discard, Retention, Storage, StreamKind, StreamSettings};
pub use typed::{EventBusExt, extract_context, inject_current_context};
