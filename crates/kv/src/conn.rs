//! One session with a Redis server: TCP or TLS (checked as `ferry_pg::client_tls` checks
//! PostgreSQL servers), AUTH, SELECT, then commands one at a time or pipelined.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    KvError, KvResult, RedisUrl,
    resp::{self, Value},
};

/// A byte stream: TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How long a connect, and any one read or write, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// A session.
pub struct Conn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    server: String,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("server", &self.server)
            .finish()
    }
}

/// The command's name, for messages (never its arguments: keys and values may be private).
fn name_of(args: &[Vec<u8>]) -> String {
    args.first()
        .map(|a| String::from_utf8_lossy(a).to_uppercase())
        .unwrap_or_default()
}

impl Conn {
    /// Connects, authenticates and selects the URL's database.
    pub async fn connect(url: &RedisUrl) -> KvResult<Self> {
        let server = url.to_string();
        let io_err = |reason: String| KvError::Io {
            server: server.clone(),
            reason,
        };
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((url.host.as_str(), url.port)),
        )
        .await
        .map_err(|_| {
            io_err(format!(
                "no connection within {}s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| io_err(format!("connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let _ = ferry_pg::net::keepalive(&tcp);
        let io: Box<dyn Io> = match url.tls {
            None => Box::new(tcp),
            Some(check) => {
                let config = ferry_pg::client_tls(check, url.root_cert.as_deref())
                    .map_err(|e| io_err(format!("TLS set-up: {e}")))?;
                let name = rustls_pki_types::ServerName::try_from(url.host.clone())
                    .map_err(|e| io_err(format!("TLS server name {}: {e}", url.host)))?;
                let tls = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
                )
                .await
                .map_err(|_| io_err("no TLS handshake within the connect timeout".into()))?
                .map_err(|e| io_err(format!("TLS: {e}")))?;
                Box::new(tls)
            }
        };
        let mut conn = Self {
            io,
            buf: Vec::with_capacity(64 * 1024),
            server,
        };
        if let Some(password) = url.password() {
            let mut auth: Vec<Vec<u8>> = vec![b"AUTH".to_vec()];
            if let Some(user) = &url.username {
                auth.push(user.as_bytes().to_vec());
            }
            auth.push(password.expose().as_bytes().to_vec());
            conn.call(auth).await?;
        }
        if url.db != 0 {
            conn.call(vec![b"SELECT".to_vec(), url.db.to_string().into_bytes()])
                .await?;
        }
        Ok(conn)
    }

    /// The session's stream and what was read past the last answer: for the endpoint's proxy,
    /// which passes frames through once the session is set up.
    pub fn into_parts(self) -> (Box<dyn Io>, Vec<u8>) {
        (self.io, self.buf)
    }

    /// The server, redacted, for messages.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Sends one command; an error answer becomes [`KvError::Refused`].
    pub async fn call(&mut self, args: Vec<Vec<u8>>) -> KvResult<Value> {
        let command = name_of(&args);
        let mut answers = self.pipeline(vec![args]).await?;
        match answers.pop() {
            Some(Value::Error(message)) => Err(KvError::Refused {
                server: self.server.clone(),
                command,
                message,
            }),
            Some(v) => Ok(v),
            None => Err(self.protocol(&command, "no answer")),
        }
    }

    /// Sends every command, then reads one answer per command, in order. Error answers stay
    /// in the list: the caller decides what each means.
    pub async fn pipeline(&mut self, commands: Vec<Vec<Vec<u8>>>) -> KvResult<Vec<Value>> {
        let mut out = Vec::new();
        for c in &commands {
            let args: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
            resp::encode(&mut out, &args);
        }
        let server = self.server.clone();
        tokio::time::timeout(IO_TIMEOUT, self.io.write_all(&out))
            .await
            .map_err(|_| KvError::Io {
                server: server.clone(),
                reason: "write timed out".into(),
            })?
            .map_err(|e| KvError::Io {
                server: server.clone(),
                reason: format!("write: {e}"),
            })?;
        let mut answers = Vec::with_capacity(commands.len());
        while answers.len() < commands.len() {
            answers.push(self.read_one().await?);
        }
        Ok(answers)
    }

    /// Sends a command without reading its answer (a subscribed session's answers arrive
    /// among its messages).
    pub async fn send(&mut self, args: Vec<Vec<u8>>) -> KvResult<()> {
        let mut out = Vec::new();
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        resp::encode(&mut out, &refs);
        tokio::time::timeout(IO_TIMEOUT, self.io.write_all(&out))
            .await
            .map_err(|_| KvError::Io {
                server: self.server.clone(),
                reason: "write timed out".into(),
            })?
            .map_err(|e| KvError::Io {
                server: self.server.clone(),
                reason: format!("write: {e}"),
            })
    }

    /// The next message of a subscribed session, or `None` when nothing came within `quiet`.
    /// Cancel-safe: a message half read stays buffered for the next call.
    pub async fn receive(&mut self, quiet: Duration) -> KvResult<Option<Value>> {
        match tokio::time::timeout(quiet, self.read_one()).await {
            Ok(v) => v.map(Some),
            Err(_) => Ok(None),
        }
    }

    async fn read_one(&mut self) -> KvResult<Value> {
        loop {
            match resp::decode(&self.buf) {
                Ok(Some((v, used))) => {
                    self.buf.drain(..used);
                    return Ok(v);
                }
                Ok(None) => {}
                Err(resp::Malformed(m)) => return Err(self.protocol("?", &m)),
            }
            // Read into the buffer's spare capacity (a stack array here would make every
            // future holding a session 64 KiB larger).
            self.buf.reserve(64 * 1024);
            let n = tokio::time::timeout(IO_TIMEOUT, self.io.read_buf(&mut self.buf))
                .await
                .map_err(|_| KvError::Io {
                    server: self.server.clone(),
                    reason: format!("no answer within {}s", IO_TIMEOUT.as_secs()),
                })?
                .map_err(|e| KvError::Io {
                    server: self.server.clone(),
                    reason: format!("read: {e}"),
                })?;
            if n == 0 {
                return Err(KvError::Io {
                    server: self.server.clone(),
                    reason: "the server closed the connection".into(),
                });
            }
        }
    }

    /// A protocol error about `command`.
    pub fn protocol(&self, command: &str, answer: &str) -> KvError {
        KvError::Protocol {
            server: self.server.clone(),
            command: command.to_string(),
            answer: answer.to_string(),
        }
    }
}

/// A command from string-ish parts.
#[macro_export]
macro_rules! cmd {
    ($($arg:expr),+ $(,)?) => {
        vec![$(AsRef::<[u8]>::as_ref(&$arg).to_vec()),+]
    };
}
