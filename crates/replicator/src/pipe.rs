//! Streams COPY data from one server to another without holding a table in memory.

use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures_util::{Sink, SinkExt, Stream, StreamExt};

use crate::error::{ReplError, ReplResult};

/// Rows are gathered into buffers of about this size before they are sent on: the source
/// hands over one message per row, and one send per row would cost more than the data.
const BUFFER: usize = 256 * 1024;

/// Forwards every message of `out` into `sink` (not finishing it); returns the bytes moved.
pub(crate) async fn pipe<S, K>(
    mut out: Pin<&mut S>,
    mut sink: Pin<&mut K>,
    what: &str,
    throttle: Option<&crate::throttle::Throttle>,
) -> ReplResult<u64>
where
    S: Stream<Item = Result<Bytes, tokio_postgres::Error>>,
    K: Sink<Bytes, Error = tokio_postgres::Error>,
{
    // The error's text is made only when there is an error: this loop runs once per row.
    let read_error = |e| ReplError::sql(format!("read {what}"))(e);
    let write_error = |e| ReplError::sql(format!("write {what}"))(e);
    let mut buf = BytesMut::with_capacity(BUFFER + BUFFER / 4);
    let mut total = 0u64;
    while let Some(data) = out.next().await {
        let data = data.map_err(read_error)?;
        total += data.len() as u64;
        buf.extend_from_slice(&data);
        if buf.len() >= BUFFER {
            let n = buf.len() as u64;
            let full = buf.split().freeze();
            // A whole new buffer now: growing the emptied one row by row would reallocate
            // and move the rows again and again.
            buf.reserve(BUFFER + BUFFER / 4);
            sink.send(full).await.map_err(write_error)?;
            if let Some(t) = throttle {
                t.take(n).await;
            }
        }
    }
    if !buf.is_empty() {
        sink.send(buf.freeze()).await.map_err(write_error)?;
    }
    Ok(total)
}
