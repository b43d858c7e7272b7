//! Reading a stream back: what a limits stream stores is a log that readers walk forward
//! from a point, without acknowledging anything and without a durable consumer.
//!
//! Log-streaming keeps logs nowhere but in `LOGS`: tails and queries read it with these
//! readers (JetStream: ordered consumers), and follow new messages with one of them that
//! never ends.

use std::fmt;
use std::pin::Pin;
use std::task::Poll;
use std::time::SystemTime;

use bytes::Bytes;
use futures::{Stream, StreamExt, stream::BoxStream};

use crate::error::EventsError;

/// Where a reader starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// At the first stored message with this sequence or a later one.
    Sequence(u64),
    /// At the first message stored at or after this time.
    Time(SystemTime),
    /// With the first message stored after the reader is opened.
    New,
}

/// A message read back from a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// The logical subject it was published to.
    pub subject: String,
    /// Its sequence in the stream.
    pub sequence: u64,
    /// When the stream stored it.
    pub time: SystemTime,
    /// The raw payload.
    pub payload: Bytes,
    /// How many more stored messages matched the reader's filter when this one was read;
    /// 0 means the reader has reached the end of what is stored. The in-memory bus only
    /// tells 0 from "at least one" (it says 1).
    pub pending: u64,
}

/// A forward reader on a stream, following new messages once it has read the stored ones.
/// Dropping it releases everything it holds on the server.
pub struct Reader {
    pending: u64,
    inner: BoxStream<'static, Result<StoredRecord, EventsError>>,
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl Reader {
    pub(crate) fn new(
        pending: u64,
        inner: BoxStream<'static, Result<StoredRecord, EventsError>>,
    ) -> Self {
        Self { pending, inner }
    }

    /// How many stored messages matched when the reader was opened (the in-memory bus says
    /// 0 or 1): with 0, nothing arrives until something new is stored.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// The next message, waiting for one to be stored if need be; `None` when the reader
    /// can go no further (the stream or the bus is gone).
    pub async fn next(&mut self) -> Option<Result<StoredRecord, EventsError>> {
        self.inner.next().await
    }
}

impl Stream for Reader {
    type Item = Result<StoredRecord, EventsError>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}
