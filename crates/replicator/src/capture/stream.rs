//! Logical capture over the streaming replication protocol: one walsender session per worker
//! streams pgoutput from the slot as the source commits, instead of the SQL functions that
//! decode again from the slot's restart point on every call.
//!
//! A task owns the session. It decodes every message into key changes, queues whole
//! transactions (a bounded queue: a slow target holds the stream back through TCP, never
//! memory), answers the server's keepalives, and tells the server how far the slot may move:
//! only to what the engine has acknowledged after the target committed it
//! ([`LogicalStream::ack`]), or, when every transaction received is applied and none is open,
//! to the server's own send position (so an idle database does not pin WAL that other
//! databases write). A worker that restarts, killed or not, streams again from the slot's
//! confirmed position: what was received and not acknowledged comes again, and the apply is
//! idempotent.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use ferry_pg::{
    PgError, PgUrl,
    walstream::{WalMessage, WalSession, parse_lsn},
};

use super::logical::{Decoder, PUBLICATION};
use crate::{
    ChangeBatch,
    error::{ReplError, ReplResult},
};

/// Changes queued (received, not yet taken) before the task stops reading the socket.
const QUEUE_CHANGES: usize = 200_000;
/// How often the task reports its position even with nothing new (the server ends a session
/// silent for `wal_sender_timeout`, 60 s by default).
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// How long a new session waits for a slot still held by a walsender whose client died.
const SLOT_BUSY_FOR: Duration = Duration::from_secs(30);

/// Where the stream stands, shared by the task and the engine.
#[derive(Debug, Default)]
struct State {
    queue: VecDeque<ChangeBatch>,
    queued_changes: usize,
    /// Transactions taken from the queue and not yet acknowledged, handed out again by the
    /// next take: an apply that failed (a table changed shape: the worker blocks and goes
    /// on with the same stream) or whose future was dropped (a `select!` that stopped
    /// waiting) must not lose them, or the slot would later move past them.
    taken: VecDeque<ChangeBatch>,
    /// A transaction's Begin came and its Commit not yet.
    open_tx: bool,
    /// End of the last transaction queued.
    delivered: u64,
    /// End of the last transaction the engine acknowledged.
    acked: u64,
    /// The server's send position from its last keepalive.
    seen: u64,
    /// Keepalives received so far.
    keepalives: u64,
    /// The engine asked for a keepalive.
    ping: bool,
    /// The engine is closing the stream.
    closing: bool,
    /// Why the task ended.
    error: Option<ReplError>,
    ended: bool,
}

impl State {
    /// Whether everything received has been applied and no transaction is half received.
    fn idle(&self) -> bool {
        self.nothing_to_take() && !self.open_tx && self.acked >= self.delivered
    }

    /// Nothing queued, nothing taken and left unacknowledged.
    fn nothing_to_take(&self) -> bool {
        self.queue.is_empty() && self.taken.is_empty()
    }

    /// How far the slot may move.
    fn confirmable(&self) -> u64 {
        if self.idle() {
            self.acked.max(self.seen)
        } else {
            self.acked
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// A transaction was queued, or the task ended.
    data: tokio::sync::Notify,
    /// The engine took from the queue, acknowledged, pinged or is closing.
    wake: tokio::sync::Notify,
    /// A keepalive arrived.
    keepalive: tokio::sync::Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A streaming session on the slot.
#[derive(Debug)]
pub struct LogicalStream {
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for LogicalStream {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl LogicalStream {
    /// Opens a replication session and starts streaming from the slot's confirmed position.
    /// A slot still held by the walsender of a client that died is waited for.
    pub async fn open(source: &PgUrl, slot: &str) -> ReplResult<Self> {
        let started = tokio::time::Instant::now();
        let session = loop {
            let mut session =
                WalSession::connect(source, ferry_pg::freeze::APPLICATION_NAME).await?;
            match session.start_logical(slot, PUBLICATION).await {
                Ok(()) => break session,
                Err(PgError::Replication { code: Some(c), .. })
                    if c == "55006" && started.elapsed() < SLOT_BUSY_FOR =>
                {
                    session.close().await;
                    tracing::info!(slot, "slot still held by an earlier session; waiting");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let shared = Arc::new(Shared::default());
        let task = Some(tokio::spawn(run(session, shared.clone())));
        Ok(Self { shared, task })
    }

    /// Takes whole transactions, about `limit` changes, waiting up to `wait` for the first.
    /// An empty batch (no position) means nothing waits. A batch may hold no change and a
    /// position (transactions that touched no published table): acknowledge it all the same.
    pub async fn take(&self, limit: usize, wait: Duration) -> ReplResult<ChangeBatch> {
        if self.shared.lock().nothing_to_take() {
            let _ = tokio::time::timeout(wait, self.shared.data.notified()).await;
        }
        let mut s = self.shared.lock();
        if s.nothing_to_take()
            && let Some(e) = s.error.take()
        {
            return Err(e);
        }
        if s.nothing_to_take() && s.ended {
            return Err(ReplError::State("the replication stream ended".into()));
        }
        let mut out = ChangeBatch::default();
        // Taken before and never acknowledged (the apply failed, or the caller dropped it
        // part-way): handed out again first, or they would be lost until a restart.
        for txn in &s.taken {
            merge(&mut out, txn.clone());
        }
        while let Some(txn) = s.queue.front() {
            if !out.changes.is_empty() && out.changes.len() + txn.changes.len() > limit {
                break;
            }
            let Some(txn) = s.queue.pop_front() else {
                break;
            };
            s.queued_changes -= txn.changes.len();
            s.taken.push_back(txn.clone());
            merge(&mut out, txn);
            if out.changes.len() >= limit {
                break;
            }
        }
        drop(s);
        self.shared.wake.notify_one();
        Ok(out)
    }

    /// Everything up to `position` (pg_lsn text) is applied on the target: the slot may move
    /// past it.
    pub fn ack(&self, position: &str) -> ReplResult<()> {
        let lsn = parse_lsn(position)
            .ok_or_else(|| ReplError::State(format!("{position:?} is not a WAL position")))?;
        let mut s = self.shared.lock();
        s.acked = s.acked.max(lsn);
        s.taken.retain(|t| end_of(t) > lsn);
        drop(s);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Whether every transaction committed at or before `position` (pg_lsn text, taken once
    /// writes stopped) has been applied: acknowledged up to it, or — with a fresh keepalive
    /// saying the server has sent everything up to it — nothing received is left to apply.
    pub async fn drained_to(&self, position: &str) -> ReplResult<bool> {
        let target = parse_lsn(position)
            .ok_or_else(|| ReplError::State(format!("{position:?} is not a WAL position")))?;
        let before = {
            let mut s = self.shared.lock();
            if s.acked >= target {
                return Ok(true);
            }
            s.ping = true;
            s.keepalives
        };
        self.shared.wake.notify_one();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            // Registered before the state is read, so a keepalive in between is not missed.
            let arrived = self.shared.keepalive.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            {
                let mut s = self.shared.lock();
                if let Some(e) = s.error.take() {
                    return Err(e);
                }
                if s.keepalives > before || s.ended {
                    return Ok(s.acked >= target || (s.idle() && s.seen >= target));
                }
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Ok(false);
            }
        }
    }

    /// Changes received and not yet applied, and the commit time of the oldest.
    pub fn backlog(&self) -> (u64, Option<chrono::DateTime<chrono::Utc>>) {
        let s = self.shared.lock();
        let oldest = s.queue.iter().filter_map(|t| t.oldest).min();
        (s.queued_changes as u64, oldest)
    }

    /// Reports the last position and ends the session (the slot is free once this returns).
    pub async fn close(mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        let Some(task) = self.task.take() else {
            return;
        };
        if tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
        {
            tracing::warn!("replication stream did not close in 5 s; dropped");
        }
    }
}

/// The task: read, decode, queue; report the position when it moves, when asked and every
/// [`STATUS_EVERY`].
async fn run(mut session: WalSession, shared: Arc<Shared>) {
    let result = pump(&mut session, &shared).await;
    let closing = {
        let mut s = shared.lock();
        s.ended = true;
        if let Err(e) = result {
            s.error = Some(e);
        }
        s.closing
    };
    if closing {
        session.close().await;
    }
    shared.data.notify_one();
    shared.keepalive.notify_waiters();
}

async fn pump(session: &mut WalSession, shared: &Shared) -> ReplResult<()> {
    let mut decoder = Decoder::default();
    let mut reported = 0u64;
    let mut tick = tokio::time::interval(STATUS_EVERY);
    loop {
        let (full, closing) = {
            let s = shared.lock();
            (s.queued_changes >= QUEUE_CHANGES, s.closing)
        };
        if closing {
            let at = shared.lock().confirmable();
            return Ok(session.status_update(at, false).await?);
        }
        let mut force = false;
        tokio::select! {
            msg = session.next(), if !full => {
                match msg? {
                    WalMessage::Data { data, .. } => receive(&mut decoder, &data, shared)?,
                    WalMessage::Keepalive { wal_end, reply_requested } => {
                        let mut s = shared.lock();
                        s.seen = s.seen.max(wal_end);
                        s.keepalives += 1;
                        force = reply_requested;
                        drop(s);
                        shared.keepalive.notify_waiters();
                    }
                }
            }
            _ = shared.wake.notified() => {}
            _ = tick.tick() => force = true,
        }
        let (at, ping) = {
            let mut s = shared.lock();
            (s.confirmable(), std::mem::take(&mut s.ping))
        };
        if force || ping || at > reported {
            session.status_update(at, ping).await?;
            reported = reported.max(at);
        }
    }
}

/// Appends one transaction to a batch being taken.
fn merge(out: &mut ChangeBatch, txn: ChangeBatch) {
    out.changes.extend(txn.changes);
    out.commits.extend(txn.commits);
    out.position = txn.position.or(out.position.take());
    out.oldest = match (out.oldest, txn.oldest) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
}

/// A queued transaction's end (its position), 0 if it has none.
fn end_of(txn: &ChangeBatch) -> u64 {
    txn.position.as_deref().and_then(parse_lsn).unwrap_or(0)
}

/// Feeds one pgoutput message; queues the transaction at its Commit.
fn receive(decoder: &mut Decoder, data: &[u8], shared: &Shared) -> ReplResult<()> {
    decoder.message(data)?;
    match data.first() {
        Some(b'B') => shared.lock().open_tx = true,
        Some(b'C') => {
            let txn = decoder.take_transaction();
            let end = end_of(&txn);
            let mut s = shared.lock();
            s.open_tx = false;
            s.delivered = s.delivered.max(end);
            s.queued_changes += txn.changes.len();
            s.queue.push_back(txn);
            drop(s);
            shared.data.notify_one();
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ferry_pg::walstream::lsn_text;

    use super::*;

    fn txn(changes: usize, end: u64) -> ChangeBatch {
        ChangeBatch {
            changes: (0..changes)
                .map(|i| crate::KeyChange::Key {
                    rel: "public.t".into(),
                    key: serde_json::json!([i.to_string()]),
                })
                .collect(),
            position: Some(lsn_text(end)),
            // As the decoder does: an id only for a transaction with changes (here, its end).
            commits: if changes > 0 {
                vec![u32::try_from(end).expect("small")]
            } else {
                Vec::new()
            },
            ..ChangeBatch::default()
        }
    }

    #[test]
    fn the_slot_moves_past_the_servers_position_only_when_everything_received_is_applied() {
        let mut s = State {
            delivered: 100,
            acked: 100,
            seen: 500,
            ..State::default()
        };
        assert_eq!(s.confirmable(), 500, "idle: the send position");
        s.open_tx = true;
        assert_eq!(s.confirmable(), 100, "a transaction half received");
        s.open_tx = false;
        s.queue.push_back(txn(1, 200));
        s.delivered = 200;
        assert_eq!(s.confirmable(), 100, "a transaction queued");
        s.queue.clear();
        assert_eq!(s.confirmable(), 100, "taken, not yet applied");
        s.acked = 200;
        assert_eq!(s.confirmable(), 500);
    }

    #[tokio::test]
    async fn whole_transactions_are_taken_up_to_the_limit() {
        let shared = Arc::new(Shared::default());
        {
            let mut s = shared.lock();
            for (n, end) in [(3, 10), (4, 20), (1, 30), (0, 40)] {
                s.queued_changes += n;
                s.queue.push_back(txn(n, end));
            }
        }
        let stream = LogicalStream {
            shared: shared.clone(),
            task: None,
        };
        let first = stream.take(5, Duration::ZERO).await.expect("take");
        assert_eq!(
            first.changes.len(),
            3,
            "the next transaction would pass the limit"
        );
        assert_eq!(first.position.as_deref(), Some("0/A"));
        assert_eq!(
            first.commits,
            [10],
            "the ids to wait for go with their changes"
        );
        stream.ack("0/A").expect("ack");
        let second = stream.take(5, Duration::ZERO).await.expect("take");
        assert_eq!(second.changes.len(), 5);
        assert_eq!(second.position.as_deref(), Some("0/1E"));
        assert_eq!(second.commits, [20, 30]);
        stream.ack("0/1E").expect("ack");
        let empty = stream.take(5, Duration::ZERO).await.expect("take");
        assert!(empty.changes.is_empty());
        assert!(empty.commits.is_empty());
        assert_eq!(
            empty.position.as_deref(),
            Some("0/28"),
            "a transaction without changes still has a position to acknowledge"
        );
        assert_eq!(stream.backlog().0, 0);
        stream.ack("0/28").expect("ack");
        let none = stream
            .take(5, Duration::from_millis(10))
            .await
            .expect("take");
        assert_eq!(none, ChangeBatch::default());
        shared.lock().error = Some(ReplError::State("gone".into()));
        assert!(stream.take(5, Duration::ZERO).await.is_err());
    }

    #[tokio::test]
    async fn what_was_taken_and_not_acknowledged_is_handed_out_again() {
        let shared = Arc::new(Shared::default());
        {
            let mut s = shared.lock();
            for (n, end) in [(2, 10), (2, 20), (2, 30)] {
                s.queued_changes += n;
                s.queue.push_back(txn(n, end));
                s.delivered = end;
            }
        }
        let stream = LogicalStream {
            shared: shared.clone(),
            task: None,
        };
        let first = stream.take(2, Duration::ZERO).await.expect("take");
        assert_eq!(first.position.as_deref(), Some("0/A"));
        // The apply failed, or its future was dropped: no acknowledgement.
        let again = stream.take(2, Duration::ZERO).await.expect("take");
        assert_eq!(again, first, "the same transaction again, nothing past it");
        let more = stream.take(4, Duration::ZERO).await.expect("take");
        assert_eq!(
            more.changes.len(),
            4,
            "the unacknowledged one, then the next"
        );
        assert_eq!(more.commits, [10, 20]);
        assert_eq!(more.position.as_deref(), Some("0/14"));
        assert!(
            !shared.lock().idle(),
            "taken and not applied is not drained"
        );
        stream.ack("0/A").expect("ack");
        let rest = stream.take(4, Duration::ZERO).await.expect("take");
        assert_eq!(
            rest.commits,
            [20, 30],
            "only what the acknowledgement did not cover"
        );
        stream.ack("0/1E").expect("ack");
        assert!(shared.lock().idle());
        assert_eq!(
            stream.take(4, Duration::ZERO).await.expect("take"),
            ChangeBatch::default()
        );
    }
}
