//! A logical replication session over PostgreSQL's streaming replication protocol: the
//! part of the wire protocol tokio-postgres does not speak (a `replication=database` start-up,
//! `START_REPLICATION`, CopyBoth frames, standby status updates).
//!
//! Written here rather than taken from a crate: `pg_walstream` 0.10 does not resolve from this
//! registry and 0.9 brings its own TLS and connection settings; `pgwire-replication` is a
//! transport without our TLS checks. What we need is small — framing, the start-up and
//! authentication (SCRAM-SHA-256 and MD5 from `postgres-protocol`, the crate tokio-postgres
//! itself uses), and TLS set up exactly as every other Ferry session ([`crate::client_tls`]:
//! the same `sslmode` rules, the same roots).
//!
//! The session never sends a password in clear over an unencrypted link: TLS is always on.
//! SCRAM runs without channel binding (`n,,`), as libpq does with `channel_binding=prefer`
//! when the server does not offer `SCRAM-SHA-256-PLUS`.

use std::{sync::Arc, time::Duration};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::{
    authentication::{
        md5_hash,
        sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256},
    },
    message::frontend,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::client::TlsStream;

use crate::{PgError, PgUrl};

/// Longest a connection and its TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest backend message accepted (a pgoutput row is at most 1 GB plus framing).
const MAX_MESSAGE: usize = 1 << 30;
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
pub const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// An error the server sent (ErrorResponse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// SQLSTATE.
    pub code: String,
    /// The message.
    pub message: String,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// What arrives while streaming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalMessage {
    /// XLogData: one output-plugin message that starts at `start`.
    Data {
        /// The WAL position of the record it came from.
        start: u64,
        /// The plugin's bytes (a pgoutput message).
        data: Bytes,
    },
    /// Primary keepalive: the server has sent everything up to `wal_end`.
    Keepalive {
        /// The server's send position.
        wal_end: u64,
        /// Whether the server wants a status update now (or it will end the session).
        reply_requested: bool,
    },
}

/// A replication-protocol session, in its start-up state or streaming (CopyBoth).
pub struct WalSession {
    io: TlsStream<TcpStream>,
    buf: BytesMut,
    url: String,
}

impl std::fmt::Debug for WalSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalSession")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl WalSession {
    /// Opens a `replication=database` session to the URL's database over TLS, named
    /// `application_name` (Ferry's name spares it from the cutover's session termination).
    pub async fn connect(url: &PgUrl, application_name: &str) -> Result<Self, PgError> {
        let redacted = url.redacted().to_string();
        let fail = |what: &str, detail: String| PgError::Replication {
            url: redacted.clone(),
            what: what.to_string(),
            detail,
            code: None,
        };
        let (host, port) = url.host_port().ok_or_else(|| PgError::InvalidUrl {
            url: redacted.clone(),
            reason: "a replication session needs a TCP host".into(),
        })?;
        let mut tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((&*host, port)))
            .await
            .map_err(|_| fail("connect", format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| fail("connect", e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let mut out = BytesMut::new();
        frontend::ssl_request(&mut out);
        tcp.write_all(&out)
            .await
            .map_err(|e| fail("ask for TLS", e.to_string()))?;
        let answer = tcp
            .read_u8()
            .await
            .map_err(|e| fail("ask for TLS", e.to_string()))?;
        if answer != b'S' {
            return Err(PgError::Tls {
                url: redacted,
                reason: "the server does not offer TLS; Ferry never connects without it".into(),
            });
        }
        let config =
            crate::client_tls(url.tls_check(), url.root_cert()).map_err(|reason| PgError::Tls {
                url: redacted.clone(),
                reason,
            })?;
        let name =
            rustls_pki_types::ServerName::try_from(host.clone()).map_err(|e| PgError::Tls {
                url: redacted.clone(),
                reason: format!("server name {host}: {e}"),
            })?;
        let io = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
        )
        .await
        .map_err(|_| fail("TLS handshake", format!("none within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| PgError::Tls {
            url: redacted.clone(),
            reason: e.to_string(),
        })?;
        let mut session = Self {
            io,
            buf: BytesMut::with_capacity(64 * 1024),
            url: redacted.clone(),
        };
        // A server that accepts TLS and then says nothing must not hold the worker forever.
        tokio::time::timeout(CONNECT_TIMEOUT, session.start_up(url, application_name))
            .await
            .map_err(|_| fail("log in", format!("no answer within {CONNECT_TIMEOUT:?}")))??;
        Ok(session)
    }

    async fn start_up(&mut self, url: &PgUrl, application_name: &str) -> Result<(), PgError> {
        let user = url.user().unwrap_or("postgres").to_string();
        let database = url.dbname().unwrap_or(&user).to_string();
        let mut out = BytesMut::new();
        frontend::startup_message(
            [
                ("user", user.as_str()),
                ("database", database.as_str()),
                ("replication", "database"),
                ("application_name", application_name),
                ("client_encoding", "UTF8"),
            ],
            &mut out,
        )
        .map_err(|e| self.error("start up", e.to_string()))?;
        self.send(&out).await?;
        let password = url.expose_password();
        self.authenticate(&user, password.as_deref()).await?;
        // ParameterStatus, BackendKeyData, notices: up to ReadyForQuery.
        loop {
            let (tag, body) = self.frame().await?;
            match tag {
                b'Z' => return Ok(()),
                b'E' => return Err(self.server_error("start up", &body)),
                _ => {}
            }
        }
    }

    async fn authenticate(&mut self, user: &str, password: Option<&str>) -> Result<(), PgError> {
        let mut scram: Option<ScramSha256> = None;
        loop {
            let (tag, mut body) = self.frame().await?;
            if tag == b'E' {
                return Err(self.server_error("log in", &body));
            }
            if tag != b'R' || body.len() < 4 {
                return Err(self.error("log in", format!("unexpected message {:?}", tag as char)));
            }
            let method = body.get_i32();
            let need = || {
                self.error(
                    "log in",
                    "the server asks for a password; put it in the URL".into(),
                )
            };
            let mut out = BytesMut::new();
            match method {
                0 => return Ok(()),
                3 => {
                    let p = password.ok_or_else(need)?;
                    frontend::password_message(p.as_bytes(), &mut out)
                        .map_err(|e| self.error("log in", e.to_string()))?;
                }
                5 => {
                    let p = password.ok_or_else(need)?;
                    if body.len() < 4 {
                        return Err(self.error("log in", "MD5 request without salt".into()));
                    }
                    let salt = [body[0], body[1], body[2], body[3]];
                    let hash = md5_hash(user.as_bytes(), p.as_bytes(), salt);
                    frontend::password_message(hash.as_bytes(), &mut out)
                        .map_err(|e| self.error("log in", e.to_string()))?;
                }
                10 => {
                    let p = password.ok_or_else(need)?;
                    let offered: Vec<&[u8]> = body.split(|b| *b == 0).collect();
                    if !offered.contains(&SCRAM_SHA_256.as_bytes()) {
                        return Err(self.error(
                            "log in",
                            "the server offers no SASL mechanism Ferry speaks (SCRAM-SHA-256)"
                                .into(),
                        ));
                    }
                    let s = ScramSha256::new(p.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)
                        .map_err(|e| self.error("log in", e.to_string()))?;
                    scram = Some(s);
                }
                11 => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| self.error("log in", "SASL out of order".into()))?;
                    s.update(&body)
                        .map_err(|e| self.error("log in (SCRAM)", e.to_string()))?;
                    frontend::sasl_response(s.message(), &mut out)
                        .map_err(|e| self.error("log in", e.to_string()))?;
                }
                12 => {
                    let mut s = scram
                        .take()
                        .ok_or_else(|| self.error("log in", "SASL out of order".into()))?;
                    s.finish(&body).map_err(|e| {
                        self.error("log in (SCRAM: the server's proof)", e.to_string())
                    })?;
                    continue;
                }
                other => {
                    return Err(self.error(
                        "log in",
                        format!("authentication method {other} is not supported; use SCRAM-SHA-256 or MD5"),
                    ));
                }
            }
            self.send(&out).await?;
        }
    }

    /// Starts streaming from `slot` with pgoutput: from the slot's confirmed position (the
    /// server skips every transaction that ended at or before it).
    pub async fn start_logical(&mut self, slot: &str, publication: &str) -> Result<(), PgError> {
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL 0/0 (\"proto_version\" '1', \"publication_names\" {})",
            crate::catalog::quote_ident(slot),
            crate::catalog::quote_literal(&crate::catalog::quote_ident(publication)),
        );
        let mut out = BytesMut::new();
        frontend::query(&sql, &mut out)
            .map_err(|e| self.error("start streaming", e.to_string()))?;
        self.send(&out).await?;
        loop {
            let (tag, body) = self.frame().await?;
            match tag {
                b'W' => return Ok(()),
                b'E' => {
                    let e = self.server_error("start streaming from the slot", &body);
                    // Read up to ReadyForQuery so the session stays usable.
                    while self.frame().await?.0 != b'Z' {}
                    return Err(e);
                }
                _ => {}
            }
        }
    }

    /// The next streaming message. Cancel-safe: a message half received stays buffered.
    pub async fn next(&mut self) -> Result<WalMessage, PgError> {
        loop {
            let (tag, mut body) = self.frame().await?;
            match tag {
                b'd' if body.first() == Some(&b'w') && body.len() >= 25 => {
                    body.advance(1);
                    let start = body.get_u64();
                    let _wal_end = body.get_u64();
                    let _sent_at = body.get_i64();
                    return Ok(WalMessage::Data { start, data: body });
                }
                b'd' if body.first() == Some(&b'k') && body.len() >= 18 => {
                    body.advance(1);
                    let wal_end = body.get_u64();
                    let _sent_at = body.get_i64();
                    let reply_requested = body.get_u8() == 1;
                    return Ok(WalMessage::Keepalive {
                        wal_end,
                        reply_requested,
                    });
                }
                b'd' => {
                    return Err(self.error(
                        "read the stream",
                        format!(
                            "unknown CopyData message {:?}",
                            body.first().map(|b| *b as char)
                        ),
                    ));
                }
                b'E' => return Err(self.server_error("stream from the slot", &body)),
                b'c' => {
                    return Err(self.error("read the stream", "the server ended the stream".into()));
                }
                // Notices and parameter changes.
                _ => {}
            }
        }
    }

    /// Sends a standby status update: everything up to `flushed` is safely applied (the slot
    /// may move past it); `reply` asks for a keepalive back at once.
    pub async fn status_update(&mut self, flushed: u64, reply: bool) -> Result<(), PgError> {
        let now = chrono_micros();
        let mut msg = BytesMut::with_capacity(40);
        msg.put_u8(b'd');
        msg.put_i32(4 + 34);
        msg.put_u8(b'r');
        msg.put_u64(flushed);
        msg.put_u64(flushed);
        msg.put_u64(flushed);
        msg.put_i64(now - PG_EPOCH_MICROS);
        msg.put_u8(u8::from(reply));
        self.send(&msg).await
    }

    /// Ends the session politely (CopyDone, Terminate). Errors are ignored: the server ends a
    /// walsender whose client went away anyway.
    pub async fn close(mut self) {
        let mut out = BytesMut::new();
        frontend::copy_done(&mut out);
        frontend::terminate(&mut out);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.io.write_all(&out).await;
            let _ = self.io.flush().await;
            let _ = self.io.shutdown().await;
        })
        .await;
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), PgError> {
        self.io
            .write_all(bytes)
            .await
            .map_err(|e| self.lost("send", &e))?;
        self.io.flush().await.map_err(|e| self.lost("send", &e))
    }

    /// One backend message: its tag and body.
    async fn frame(&mut self) -> Result<(u8, Bytes), PgError> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let len = usize::try_from(len).unwrap_or(0);
                if !(4..=MAX_MESSAGE).contains(&len) {
                    return Err(self.error(
                        "read a message",
                        format!("message length {len} out of bounds"),
                    ));
                }
                if self.buf.len() > len {
                    let tag = self.buf[0];
                    self.buf.advance(5);
                    let body = self.buf.split_to(len - 4).freeze();
                    return Ok((tag, body));
                }
                self.buf.reserve(len + 1 - self.buf.len());
            }
            let n = self
                .io
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| self.lost("receive", &e))?;
            if n == 0 {
                return Err(PgError::Replication {
                    url: self.url.clone(),
                    what: "receive".into(),
                    detail: "the server closed the connection".into(),
                    code: Some(LOST.into()),
                });
            }
        }
    }

    fn error(&self, what: &str, detail: String) -> PgError {
        PgError::Replication {
            url: self.url.clone(),
            what: what.into(),
            detail,
            code: None,
        }
    }

    fn lost(&self, what: &str, e: &std::io::Error) -> PgError {
        PgError::Replication {
            url: self.url.clone(),
            what: what.into(),
            detail: e.to_string(),
            code: Some(LOST.into()),
        }
    }

    fn server_error(&self, what: &str, body: &[u8]) -> PgError {
        let e = parse_error(body);
        PgError::Replication {
            url: self.url.clone(),
            what: what.into(),
            detail: e.message,
            code: Some(e.code),
        }
    }
}

/// The code recorded for a connection that broke (not a SQLSTATE the server sends: class 08
/// is "connection exception").
pub const LOST: &str = "08006";

/// The fields of an ErrorResponse.
pub fn parse_error(body: &[u8]) -> ServerError {
    let mut e = ServerError {
        code: String::new(),
        message: String::new(),
    };
    for field in body.split(|b| *b == 0) {
        let Some((kind, text)) = field.split_first() else {
            continue;
        };
        let text = String::from_utf8_lossy(text).into_owned();
        match kind {
            b'C' => e.code = text,
            b'M' => e.message = text,
            _ => {}
        }
    }
    e
}

fn chrono_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Parses `X/Y` (pg_lsn text).
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Formats a WAL position as pg_lsn text.
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_round_trip() {
        for text in ["0/0", "1/10", "16/B374D848", "FFFFFFFF/FFFFFFFF"] {
            assert_eq!(lsn_text(parse_lsn(text).expect(text)), text);
        }
        assert_eq!(parse_lsn("1/10"), Some(0x1_0000_0010));
        assert_eq!(parse_lsn("nonsense"), None);
        assert_eq!(parse_lsn("1/xyz"), None);
    }

    #[test]
    fn error_fields_are_read() {
        let body = b"SERROR\0VERROR\0C55006\0Mreplication slot \"s\" is active for PID 7\0\0";
        assert_eq!(
            parse_error(body),
            ServerError {
                code: "55006".into(),
                message: "replication slot \"s\" is active for PID 7".into()
            }
        );
    }
}
