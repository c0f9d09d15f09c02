//! The task's side of the control channel ([`ferry_core::control`]): a TCP listener that
//! checks each request's signature, hands the desired state to the supervisor's loop and
//! writes back the loop's answer. The loop acts on it exactly as on a state read from the
//! table; this only saves the wait for the next poll and for the report to be read.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use ferry_core::{
    control::{self, ControlReply, MAX_LINE},
    endpoint::EndpointDesired,
    secret::Secret,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc, oneshot},
};

/// A desired state for the loop, and where its answer goes.
pub type Request = (EndpointDesired, oneshot::Sender<ControlReply>);

/// How long a client may take to send its line.
const READ_LIMIT: Duration = Duration::from_secs(2);

/// Longest wait for the loop's answer (a pause bound plus a retarget's, with room).
const ANSWER_LIMIT: Duration = Duration::from_secs(60);

/// Connections served at once; more wait (the control plane opens one per step).
const CONNECTIONS: usize = 8;

/// Serves control requests for `app` on `listener` until the loop's receiver is dropped.
pub fn serve(
    listener: TcpListener,
    key: Secret,
    app: String,
    loop_tx: mpsc::Sender<Request>,
) -> tokio::task::JoinHandle<()> {
    let key = Arc::new(key);
    let app = Arc::new(app);
    let slots = Arc::new(Semaphore::new(CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "control channel: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if loop_tx.is_closed() {
                return;
            }
            let (key, app, tx) = (key.clone(), app.clone(), loop_tx.clone());
            tokio::spawn(async move {
                if let Err(e) = answer(stream, &key, &app, &tx).await {
                    tracing::warn!(%peer, error = %e, "control channel: request not answered");
                }
                drop(permit);
            });
        }
    })
}

/// Reads one line, bounded in size and time.
async fn read_line(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut reader = BufReader::new(stream).take(MAX_LINE as u64 + 1);
    let mut line = String::new();
    match tokio::time::timeout(READ_LIMIT, reader.read_line(&mut line)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(std::io::Error::other("no request line within 2 s")),
    }
    if line.len() > MAX_LINE || !line.ends_with('\n') {
        return Err(std::io::Error::other(format!(
            "request line over {MAX_LINE} bytes or cut short"
        )));
    }
    line.pop();
    Ok(line)
}

async fn answer(
    mut stream: TcpStream,
    key: &Secret,
    app: &str,
    loop_tx: &mpsc::Sender<Request>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let reply = match read_line(&mut stream).await {
        Err(e) => ControlReply::Refused(e.to_string()),
        Ok(line) => {
            match control::parse_request(
                key.expose().as_bytes(),
                app,
                &line,
                Utc::now().timestamp(),
            ) {
                Err(e) => {
                    tracing::warn!(error = %e, "control channel: request refused");
                    ControlReply::Refused(e.to_string())
                }
                Ok(want) => ask_loop(want, loop_tx).await,
            }
        }
    };
    let mut text = serde_json::to_string(&reply).unwrap_or_default();
    text.push('\n');
    stream.write_all(text.as_bytes()).await?;
    stream.shutdown().await
}

async fn ask_loop(want: EndpointDesired, loop_tx: &mpsc::Sender<Request>) -> ControlReply {
    let (tx, rx) = oneshot::channel();
    if loop_tx.send((want, tx)).await.is_err() {
        return ControlReply::Refused("the task is stopping".into());
    }
    match tokio::time::timeout(ANSWER_LIMIT, rx).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(_)) => ControlReply::Refused("the task is stopping".into()),
        Err(_) => ControlReply::Refused("no answer from the task's loop within 60 s".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn listening() -> (std::net::SocketAddr, mpsc::Receiver<Request>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = mpsc::channel(4);
        serve(listener, Secret::new("key-1"), "acme".into(), tx);
        (addr, rx)
    }

    async fn send(addr: std::net::SocketAddr, line: &str) -> ControlReply {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(line.as_bytes()).await.expect("write");
        let mut out = String::new();
        BufReader::new(s).read_line(&mut out).await.expect("read");
        serde_json::from_str(&out).expect("a reply")
    }

    #[tokio::test]
    async fn a_signed_request_reaches_the_loop_and_its_answer_comes_back() {
        let (addr, mut rx) = listening().await;
        let want = EndpointDesired {
            seq: 3,
            paused: true,
            ..EndpointDesired::initial("acme")
        };
        let line = control::request_line(b"key-1", &want, Utc::now().timestamp());
        let looped = tokio::spawn(async move {
            let (got, reply) = rx.recv().await.expect("a request");
            reply
                .send(ControlReply::Refused(format!("seen {}", got.seq)))
                .expect("answer");
        });
        assert_eq!(
            send(addr, &line).await,
            ControlReply::Refused("seen 3".into())
        );
        looped.await.expect("loop");
    }

    #[tokio::test]
    async fn a_bad_signature_or_an_endless_line_never_reaches_the_loop() {
        let (addr, mut rx) = listening().await;
        let want = EndpointDesired::initial("acme");
        let forged = control::request_line(b"key-2", &want, Utc::now().timestamp());
        assert!(
            matches!(send(addr, &forged).await, ControlReply::Refused(r) if r.contains("does not match"))
        );
        let long = "x".repeat(MAX_LINE + 10) + "\n";
        assert!(matches!(send(addr, &long).await, ControlReply::Refused(r) if r.contains("over")));
        assert!(rx.try_recv().is_err(), "nothing reached the loop");
    }
}
