//! A tiny HTTP server for tests: records every request body and answers with a status the
//! test can change (a Slack webhook that must receive a prompt; a health URL that turns bad).

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU16, Ordering},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// The server; it lives as long as the test's runtime.
#[derive(Debug, Clone)]
pub struct Sink {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    status: Arc<AtomicU16>,
    bodies: Arc<Mutex<Vec<(String, String)>>>,
}

impl Sink {
    /// Starts a server answering 200.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let status = Arc::new(AtomicU16::new(200));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (s, b) = (status.clone(), bodies.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (s, b) = (s.clone(), b.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    // Read the head, then as much body as Content-Length says.
                    let (head_end, len) = loop {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                            let len = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            break (i + 4, len);
                        }
                    };
                    while buf.len() < head_end + len {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let head = String::from_utf8_lossy(&buf[..head_end]);
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
                    b.lock().expect("sink lock").push((path, body));
                    let code = s.load(Ordering::SeqCst);
                    let reply = format!(
                        "HTTP/1.1 {code} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                });
            }
        });
        Self {
            url,
            status,
            bodies,
        }
    }

    /// Answers `code` from now on.
    pub fn answer(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }

    /// Requests received so far: (path, body).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.bodies.lock().expect("sink lock").clone()
    }
}
