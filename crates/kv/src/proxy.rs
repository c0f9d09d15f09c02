//! The Redis side of the endpoint: a RESP proxy the AWS fleet's `REDIS_URL` points at, switched
//! in place from Heroku Redis to ElastiCache (pause → retarget → resume) so that an app that
//! read `REDIS_URL` once at boot and holds pooled connections sees a held command, not an
//! error.
//!
//! It terminates the client's session (TLS, AUTH/HELLO with the endpoint's own password) and
//! keeps one backend session per client session, opened lazily on the backend of the moment
//! with the client's database, protocol (RESP2 or RESP3) and name. Commands are passed
//! through in batches (a pipelining client stays pipelined); answers are passed back frame by
//! frame (RESP3 pushes included).
//!
//! **Pause** holds every client session at a command boundary: a session *at rest* (no
//! command in flight, not inside MULTI, no WATCH) reads its next commands but does not send
//! them until the resume. A session blocked in BRPOP and the like is released with
//! `CLIENT UNBLOCK` (the client sees the command time out, which workers treat as an empty
//! poll, and polls again into the pause); where the server refuses that, the pause waits
//! for the blocking timeout up to its bound. **Retarget** (only while paused) checks the new
//! backend's login, then numbers it: each session moves to it before its next command.
//! Sessions in pub/sub or MONITOR mode pass bytes through untouched and are closed when the
//! backend changes (pub/sub delivers nothing across servers anyway; clients resubscribe).
//! Refused through the endpoint, with a message saying why: `CLIENT REPLY` (answers could not
//! be counted) and `CLIENT TRACKING` (invalidations would stop at the switch).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst},
    },
    time::{Duration, Instant},
};

use ferry_core::secret::Secret;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::watch,
};

use crate::{
    Conn, KvError, KvResult, RedisUrl, cmd,
    conn::Io,
    resp::{self, Value},
};

/// Commands that may block on the server.
const BLOCKING: &[&str] = &[
    "BLPOP",
    "BRPOP",
    "BRPOPLPUSH",
    "BLMOVE",
    "BLMPOP",
    "BZPOPMIN",
    "BZPOPMAX",
    "BZMPOP",
    "XREAD",
    "XREADGROUP",
    "WAIT",
    "WAITAOF",
];
/// Commands after which a session only passes bytes through.
const RAW_MODE: &[&str] = &["SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR"];
/// Commands a session reads at most this many of before sending them on.
const BATCH: usize = 512;
/// A client's unsent bytes beyond this close its session (a command over 512 MB cannot be
/// valid).
const MAX_INPUT: usize = 600 * 1024 * 1024;

/// What a pause found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paused {
    /// Sessions open when it was reached.
    pub sessions: usize,
    /// Blocked commands released with CLIENT UNBLOCK.
    pub unblocked: usize,
    /// How long it took.
    pub took: Duration,
}

/// The proxy's state, shared by its sessions and its controller.
struct Shared {
    backend: Mutex<Arc<RedisUrl>>,
    generation: watch::Sender<u64>,
    paused: AtomicBool,
    resumed: watch::Sender<bool>,
    busy: AtomicUsize,
    sessions: AtomicUsize,
    next_id: AtomicU64,
    /// Sessions with a blocking command in flight: session → (backend URL, backend client id).
    blocked: Mutex<HashMap<u64, (Arc<RedisUrl>, i64)>>,
    /// The clients' login (user, password); replaced when the endpoint's secret rotates.
    login: Mutex<(Option<String>, Secret)>,
    /// The databases clients may use (`None`: any): the ones the migration copies.
    databases: Mutex<Option<Vec<u32>>>,
    max_sessions: usize,
    /// Sessions closed because their backend changed under pub/sub or MONITOR.
    closed_by_switch: AtomicU64,
    /// The control sessions that send CLIENT UNBLOCK, per server.
    control: tokio::sync::Mutex<HashMap<String, Conn>>,
}

/// The proxy and its controls.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("backend", &self.backend().to_string())
            .field("paused", &self.paused())
            .finish()
    }
}

impl Proxy {
    /// A proxy to `backend` whose clients log in with `password` (and, if given, `username`;
    /// `default` is always accepted as Redis's own default user).
    pub fn new(
        backend: RedisUrl,
        username: Option<String>,
        password: Secret,
        max_sessions: usize,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                backend: Mutex::new(Arc::new(backend)),
                generation: watch::Sender::new(0),
                paused: AtomicBool::new(false),
                resumed: watch::Sender::new(true),
                busy: AtomicUsize::new(0),
                sessions: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
                blocked: Mutex::new(HashMap::new()),
                login: Mutex::new((username, password)),
                databases: Mutex::new(None),
                max_sessions,
                closed_by_switch: AtomicU64::new(0),
                control: tokio::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Limits the databases clients may SELECT (or name with HELLO … SETNAME's session) to
    /// `databases`, the ones the migration copies: writes anywhere else would stay on Heroku.
    pub fn limit_databases(&self, databases: Vec<u32>) {
        if let Ok(mut d) = self.shared.databases.lock() {
            *d = Some(databases);
        }
    }

    /// Replaces the clients' login (a rotated secret): sessions that log in from now on must
    /// use it; sessions already logged in go on. Whether it changed.
    pub fn set_login(&self, username: Option<String>, password: Secret) -> bool {
        let Ok(mut login) = self.shared.login.lock() else {
            return false;
        };
        let changed = login.0 != username || login.1.expose() != password.expose();
        *login = (username, password);
        changed
    }

    /// The backend of the moment.
    pub fn backend(&self) -> Arc<RedisUrl> {
        self.shared
            .backend
            .lock()
            .map(|b| b.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Whether sessions are held.
    pub fn paused(&self) -> bool {
        self.shared.paused.load(SeqCst)
    }

    /// Open client sessions.
    pub fn sessions(&self) -> usize {
        self.shared.sessions.load(SeqCst)
    }

    /// Pub/sub or MONITOR sessions closed by a retarget so far.
    pub fn closed_by_switch(&self) -> u64 {
        self.shared.closed_by_switch.load(SeqCst)
    }

    /// Accepts clients on `listener` (TLS when `tls` is given) until the task is dropped.
    pub fn serve(
        &self,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> tokio::task::JoinHandle<()> {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let _ = ferry_pg::net::keepalive(&tcp);
                let (shared, tls) = (shared.clone(), tls.clone());
                tokio::spawn(async move {
                    let io: Box<dyn Io> = match tls {
                        None => Box::new(tcp),
                        Some(acceptor) => {
                            match tokio::time::timeout(
                                Duration::from_secs(10),
                                acceptor.accept(tcp),
                            )
                            .await
                            {
                                Ok(Ok(s)) => Box::new(s),
                                _ => return,
                            }
                        }
                    };
                    session(shared, io).await;
                });
            }
        })
    }

    /// Holds every session at its next command boundary; returns once none has a command in
    /// flight, or resumes and fails after `bound`.
    pub async fn pause(&self, bound: Duration) -> KvResult<Paused> {
        let started = Instant::now();
        let s = &self.shared;
        s.paused.store(true, SeqCst);
        s.resumed.send_replace(false);
        let mut unblocked = self.unblock().await;
        let mut last_unblock = Instant::now();
        while s.busy.load(SeqCst) > 0 {
            // A session that sent its blocking command as the pause began is released too.
            if last_unblock.elapsed() > Duration::from_millis(50) {
                unblocked += self.unblock().await;
                last_unblock = Instant::now();
            }
            if started.elapsed() > bound {
                let busy = s.busy.load(SeqCst);
                self.resume();
                return Err(KvError::Io {
                    server: self.backend().to_string(),
                    reason: format!(
                        "the Redis endpoint could not pause within {} ms: {busy} sessions still had a command in flight (a long MULTI or WATCH, or a blocking command the server would not release); resumed",
                        bound.as_millis()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(Paused {
            sessions: s.sessions.load(SeqCst),
            unblocked,
            took: started.elapsed(),
        })
    }

    /// Releases every blocked command with CLIENT UNBLOCK (best effort: a server that refuses
    /// it leaves the pause to wait for the blocking timeout).
    async fn unblock(&self) -> usize {
        let blocked: Vec<_> = self
            .shared
            .blocked
            .lock()
            .map(|b| b.values().cloned().collect())
            .unwrap_or_default();
        let mut by_server: HashMap<String, (Arc<RedisUrl>, Vec<i64>)> = HashMap::new();
        for (url, id) in blocked {
            by_server
                .entry(url.to_string())
                .or_insert_with(|| (url.clone(), Vec::new()))
                .1
                .push(id);
        }
        let mut n = 0;
        // One control session per server, kept across pauses (a pause re-sends every 50 ms
        // while a session is busy: no new TLS session each time); dropped when it fails.
        let mut control = self.shared.control.lock().await;
        for (server, (url, ids)) in by_server {
            let mut c = match control.remove(&server) {
                Some(c) => c,
                None => match Conn::connect(&url).await {
                    Ok(c) => c,
                    Err(_) => continue,
                },
            };
            let commands = ids
                .iter()
                .map(|id| cmd!["CLIENT", "UNBLOCK", id.to_string()])
                .collect();
            if let Ok(answers) = c.pipeline(commands).await {
                n += answers.iter().filter(|a| **a == Value::Int(1)).count();
                control.insert(server, c);
            }
        }
        n
    }

    /// Checks that `backend` takes the proxy's login (connect, AUTH, PING): done ahead of a
    /// retarget, while the cutover freezes and drains.
    pub async fn check(backend: &RedisUrl) -> KvResult<()> {
        let mut c = Conn::connect(backend).await?;
        c.call(cmd!["PING"]).await?;
        Ok(())
    }

    /// Points the proxy at `backend` (only while paused): its login is checked first; each
    /// session moves to it before its next command.
    pub async fn retarget(&self, backend: RedisUrl) -> KvResult<()> {
        Self::check(&backend).await?;
        self.retarget_checked(backend)
    }

    /// [`Proxy::retarget`] to a backend whose login [`Proxy::check`] confirmed just before.
    pub fn retarget_checked(&self, backend: RedisUrl) -> KvResult<()> {
        if !self.paused() {
            return Err(KvError::Io {
                server: backend.to_string(),
                reason: "the Redis endpoint is retargeted only while paused".into(),
            });
        }
        if let Ok(mut b) = self.shared.backend.lock() {
            *b = Arc::new(backend);
        }
        self.shared.generation.send_modify(|g| *g += 1);
        // The control sessions served the server left; the next pause opens its own.
        if let Ok(mut control) = self.shared.control.try_lock() {
            control.clear();
        }
        Ok(())
    }

    /// Replaces the current backend's URL (rotated credentials) without moving any session:
    /// backend sessions opened from now on use it.
    pub fn refresh(&self, backend: RedisUrl) {
        if let Ok(mut b) = self.shared.backend.lock() {
            *b = Arc::new(backend);
        }
    }

    /// Lets held sessions go on.
    pub fn resume(&self) {
        self.shared.paused.store(false, SeqCst);
        self.shared.resumed.send_replace(true);
    }
}

/// One client session's state.
struct Session {
    id: u64,
    authed: bool,
    db: u32,
    proto: Option<Vec<u8>>,
    name: Option<Vec<u8>>,
    in_tx: bool,
    watching: bool,
    /// A SELECT queued inside MULTI: it takes effect only if EXEC runs the transaction.
    queued_db: Option<u32>,
    /// Logins refused on this connection.
    failed_logins: u32,
    /// A MULTI was sent and no EXEC or DISCARD since, as the commands are read (a batch is
    /// read before its answers set `in_tx`).
    multi_open: bool,
    backend: Option<Backend>,
}

/// A backend session, passed through.
struct Backend {
    url: Arc<RedisUrl>,
    generation: u64,
    client_id: i64,
    io: Box<dyn Io>,
    buf: Vec<u8>,
}

impl Session {
    fn at_rest(&self) -> bool {
        !self.in_tx && !self.watching
    }

    fn resp3(&self) -> bool {
        self.proto.as_deref() == Some(b"3")
    }
}

/// Redis's answer to (P|S)UNSUBSCRIBE from a client with no subscription (a session outside
/// pub/sub mode, where this proxy counts one answer per command): one message per channel
/// named, or one with a null channel, each with a count of 0; pushes in RESP3. Answered here,
/// since the server's several answers to one command would shift every later answer.
fn unsubscribed(name: &str, channels: &[Vec<u8>], resp3: bool) -> Vec<u8> {
    let kind = name.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut one = |channel: Option<&[u8]>| {
        out.extend_from_slice(if resp3 { b">3\r\n" } else { b"*3\r\n" });
        out.extend_from_slice(format!("${}\r\n{kind}\r\n", kind.len()).as_bytes());
        match channel {
            Some(c) => {
                out.extend_from_slice(format!("${}\r\n", c.len()).as_bytes());
                out.extend_from_slice(c);
                out.extend_from_slice(b"\r\n");
            }
            None if resp3 => out.extend_from_slice(b"_\r\n"),
            None => out.extend_from_slice(b"$-1\r\n"),
        }
        out.extend_from_slice(b":0\r\n");
    };
    if channels.is_empty() {
        one(None);
    }
    for c in channels {
        one(Some(c));
    }
    out
}

/// A local answer, as the client's protocol expects it (RESP2 simple error/string both work
/// in RESP3).
fn err(text: &str) -> Vec<u8> {
    format!("-{text}\r\n").into_bytes()
}

fn upper(a: &[u8]) -> String {
    String::from_utf8_lossy(a).to_ascii_uppercase()
}

async fn session(shared: Arc<Shared>, mut client: Box<dyn Io>) {
    if shared.sessions.fetch_add(1, SeqCst) >= shared.max_sessions {
        let _ = client
            .write_all(&err("ERR max number of clients reached"))
            .await;
        shared.sessions.fetch_sub(1, SeqCst);
        return;
    }
    let mut s = Session {
        id: shared.next_id.fetch_add(1, SeqCst),
        authed: false,
        db: 0,
        proto: None,
        name: None,
        in_tx: false,
        watching: false,
        queued_db: None,
        failed_logins: 0,
        multi_open: false,
        backend: None,
    };
    let result = serve_session(&shared, &mut s, &mut client).await;
    if let Err(e) = result {
        tracing::debug!(session = s.id, "Redis endpoint session ended: {e}");
    }
    if !s.at_rest() {
        shared.busy.fetch_sub(1, SeqCst);
    }
    if let Ok(mut b) = shared.blocked.lock() {
        b.remove(&s.id);
    }
    shared.sessions.fetch_sub(1, SeqCst);
}

/// Why a session ends.
type End = String;

/// Answers held for a batch before they are sent on.
const FLUSH_AT: usize = 256 * 1024;

/// A connection is closed after this many refused logins.
const MAX_FAILED_LOGINS: u32 = 5;
/// The wait before the next command of a connection whose login was refused, per refusal.
const LOGIN_BACKOFF: Duration = Duration::from_millis(200);

/// Before AUTH a client may hold at most this much unparsed input (Redis: 1 MB).
const MAX_INPUT_UNAUTHENTICATED: usize = 1024 * 1024;
/// A client that has not logged in this long after connecting is closed, so connections that
/// never log in cannot hold the session slots.
const AUTH_DEADLINE: Duration = Duration::from_secs(10);

async fn read_more(
    client: &mut Box<dyn Io>,
    input: &mut Vec<u8>,
    authed: bool,
    deadline: tokio::time::Instant,
) -> Result<(), End> {
    let cap = if authed {
        MAX_INPUT
    } else {
        MAX_INPUT_UNAUTHENTICATED
    };
    if input.len() > cap {
        return Err(format!("client input beyond {} bytes", cap));
    }
    input.reserve(16 * 1024);
    let read = client.read_buf(input);
    let got = if authed {
        read.await
    } else {
        match tokio::time::timeout_at(deadline, read).await {
            Ok(r) => r,
            Err(_) => return Err("no login within the deadline".into()),
        }
    };
    match got {
        Ok(0) => Err("client closed".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("client read: {e}")),
    }
}

async fn serve_session(
    shared: &Arc<Shared>,
    s: &mut Session,
    client: &mut Box<dyn Io>,
) -> Result<(), End> {
    let mut input = Vec::with_capacity(16 * 1024);
    // The command under way is parsed across reads, never from its start again.
    let mut parser = resp::CommandParser::default();
    let login_by = tokio::time::Instant::now() + AUTH_DEADLINE;
    loop {
        // The commands the client has sent, at least one, at most BATCH; one at a time until
        // it has logged in (each parsed within the limits of its moment).
        let (limits, most) = if s.authed {
            (resp::AUTHENTICATED, BATCH)
        } else {
            (resp::UNAUTHENTICATED, 1)
        };
        let mut batch = Vec::new();
        let mut used = 0;
        while batch.len() < most {
            match parser.next(&input[used..], limits) {
                Ok(Some((args, n))) => {
                    used += n;
                    if !args.is_empty() {
                        batch.push(args);
                    }
                }
                Ok(None) if batch.is_empty() => {
                    read_more(client, &mut input, s.authed, login_by).await?;
                }
                Ok(None) => break,
                Err(resp::Malformed(m)) => {
                    let _ = client
                        .write_all(&err(&format!("ERR Protocol error: {m}")))
                        .await;
                    return Err(m);
                }
            }
        }
        input.drain(..used);
        if s.at_rest() {
            enter(shared).await;
        }
        let outcome = run_batch(shared, s, client, batch).await;
        // Busy from the batch that left rest until the one that comes back to it (a MULTI
        // or WATCH spans batches).
        if s.at_rest() {
            shared.busy.fetch_sub(1, SeqCst);
        }
        if s.failed_logins >= MAX_FAILED_LOGINS && !s.authed {
            return Err(format!("{MAX_FAILED_LOGINS} failed logins"));
        }
        if s.failed_logins > 0 && !s.authed {
            // Each refused login slows the next try on this connection.
            tokio::time::sleep(LOGIN_BACKOFF * s.failed_logins).await;
        }
        match outcome? {
            Next::Go => {}
            Next::Raw => return raw(shared, s, client, input).await,
            Next::Quit => return Ok(()),
        }
    }
}

/// Counts the session busy, unless the proxy is paused: then waits for the resume.
async fn enter(shared: &Shared) {
    loop {
        shared.busy.fetch_add(1, SeqCst);
        if !shared.paused.load(SeqCst) {
            return;
        }
        shared.busy.fetch_sub(1, SeqCst);
        let mut resumed = shared.resumed.subscribe();
        let _ = resumed.wait_for(|r| *r).await;
    }
}

/// What the session does after a batch.
enum Next {
    Go,
    Raw,
    Quit,
}

/// What to do with one command.
enum Handling {
    /// Answer here.
    Local(Vec<u8>),
    /// Send this (possibly rewritten) command to the backend.
    Forward(Vec<Vec<u8>>),
    /// Answer +OK and close.
    Quit,
}

/// Whether a SELECT of `db` (its text) is allowed.
fn database_allowed(shared: &Shared, db: &[u8]) -> bool {
    let Ok(limit) = shared.databases.lock() else {
        return false;
    };
    match limit.as_ref() {
        None => true,
        Some(list) => std::str::from_utf8(db)
            .ok()
            .and_then(|d| d.parse::<u32>().ok())
            .is_some_and(|d| list.contains(&d)),
    }
}

fn allowed_databases(shared: &Shared) -> String {
    shared
        .databases
        .lock()
        .ok()
        .and_then(|d| d.clone())
        .map(|d| d.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

fn check_login(shared: &Shared, user: Option<&[u8]>, password: &[u8]) -> bool {
    let Ok(login) = shared.login.lock() else {
        return false;
    };
    let user_ok = match user {
        None => true,
        Some(u) => u == b"default" || login.0.as_deref().map(str::as_bytes) == Some(u),
    };
    let want = login.1.expose().as_bytes();
    // Constant time over the password's length.
    let same = want.len() == password.len()
        && want
            .iter()
            .zip(password)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    user_ok && same
}

/// Sent in place of an AUTH or HELLO inside MULTI: no such command exists, so the server
/// answers an error that names it and aborts the transaction at EXEC.
const AUTH_IN_MULTI: &[u8] = b"FERRY-ENDPOINT-REFUSES-AUTH-INSIDE-MULTI";

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

fn handle(shared: &Shared, s: &mut Session, args: &[Vec<u8>]) -> Handling {
    let name = upper(&args[0]);
    let in_multi = s.multi_open || s.in_tx;
    match name.as_str() {
        "MULTI" if s.authed => s.multi_open = true,
        "EXEC" | "DISCARD" => s.multi_open = false,
        _ => {}
    }
    match name.as_str() {
        // Inside MULTI Redis queues AUTH and answers it in EXEC's array, which the proxy's
        // own login cannot join. A command the server refuses to queue takes its place: the
        // client reads an error naming why, and EXEC aborts the transaction (EXECABORT), as
        // Redis does for any command refused while queuing.
        "AUTH" | "HELLO" if in_multi => Handling::Forward(vec![AUTH_IN_MULTI.to_vec()]),
        "AUTH" => {
            let ok = match args.len() {
                2 => check_login(shared, None, &args[1]),
                3 => check_login(shared, Some(&args[1]), &args[2]),
                _ => {
                    return Handling::Local(err(
                        "ERR wrong number of arguments for 'auth' command",
                    ));
                }
            };
            s.authed |= ok;
            s.failed_logins += u32::from(!ok);
            Handling::Local(if ok {
                b"+OK\r\n".to_vec()
            } else {
                err(WRONGPASS)
            })
        }
        "HELLO" => hello(shared, s, args),
        "QUIT" => Handling::Quit,
        _ if !s.authed => Handling::Local(err("NOAUTH Authentication required.")),
        _ if let Some(why) = crate::deny::refused(args) => Handling::Local(err(&why)),
        "SELECT" if args.len() == 2 && !database_allowed(shared, &args[1]) => {
            Handling::Local(err(&format!(
                "ERR database {} is not one the migration copies (redis.databases), so its writes would stay on Heroku; use one of {}",
                String::from_utf8_lossy(&args[1]),
                allowed_databases(shared)
            )))
        }
        "UNSUBSCRIBE" | "PUNSUBSCRIBE" | "SUNSUBSCRIBE" => {
            Handling::Local(unsubscribed(&name, &args[1..], s.resp3()))
        }
        "CLIENT" if args.len() > 1 => match upper(&args[1]).as_str() {
            "REPLY" => Handling::Local(err(
                "ERR CLIENT REPLY is not supported through the Ferry endpoint (its answers could not be counted)",
            )),
            "TRACKING" => Handling::Local(err(
                "ERR CLIENT TRACKING is not supported through the Ferry endpoint (invalidations would stop when the endpoint switches servers)",
            )),
            _ => Handling::Forward(args.to_vec()),
        },
        _ => Handling::Forward(args.to_vec()),
    }
}

/// HELLO [protover [AUTH user pass] [SETNAME name]]: the login is checked here; the rest goes
/// to the backend without the password.
fn hello(shared: &Shared, s: &mut Session, args: &[Vec<u8>]) -> Handling {
    let mut forward = vec![args[0].clone()];
    let mut i = 1;
    if let Some(v) = args.get(1) {
        forward.push(v.clone());
        i = 2;
    }
    while i < args.len() {
        match upper(&args[i]).as_str() {
            "AUTH" if i + 2 < args.len() => {
                if !check_login(shared, Some(&args[i + 1]), &args[i + 2]) {
                    s.failed_logins += 1;
                    return Handling::Local(err(WRONGPASS));
                }
                s.authed = true;
                i += 3;
            }
            "SETNAME" if i + 1 < args.len() => {
                forward.extend([args[i].clone(), args[i + 1].clone()]);
                i += 2;
            }
            _ => return Handling::Local(err("ERR Syntax error in HELLO option")),
        }
    }
    if !s.authed {
        return Handling::Local(err(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        ));
    }
    Handling::Forward(forward)
}

async fn run_batch(
    shared: &Arc<Shared>,
    s: &mut Session,
    client: &mut Box<dyn Io>,
    batch: Vec<Vec<Vec<u8>>>,
) -> Result<Next, End> {
    let mut run: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut out = Vec::new();
    let mut rest = batch.into_iter();
    while let Some(args) = rest.next() {
        let handling = handle(shared, s, &args);
        let raw = matches!(&handling, Handling::Forward(_))
            && RAW_MODE.contains(&upper(&args[0]).as_str());
        match handling {
            Handling::Forward(c) if raw => {
                forward(shared, s, &mut run, (&mut out, client)).await?;
                client.write_all(&out).await.map_err(|e| e.to_string())?;
                // This command and what follows in the batch go through untouched; so do
                // their answers (RESP3 sends subscription confirmations as pushes).
                let mut wire = Vec::new();
                for a in std::iter::once(c).chain(rest) {
                    let refs: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
                    resp::encode(&mut wire, &refs);
                }
                let b = backend(shared, s).await.map_err(|e| e.to_string())?;
                b.io.write_all(&wire).await.map_err(|e| e.to_string())?;
                return Ok(Next::Raw);
            }
            Handling::Forward(c) => run.push(c),
            Handling::Local(answer) => {
                forward(shared, s, &mut run, (&mut out, client)).await?;
                out.extend(answer);
            }
            Handling::Quit => {
                forward(shared, s, &mut run, (&mut out, client)).await?;
                out.extend(b"+OK\r\n");
                let _ = client.write_all(&out).await;
                return Ok(Next::Quit);
            }
        }
    }
    forward(shared, s, &mut run, (&mut out, client)).await?;
    client.write_all(&out).await.map_err(|e| e.to_string())?;
    Ok(Next::Go)
}

/// Opens the session's backend on the backend of the moment (or keeps the one it has, if
/// still current) with its database, protocol and name.
async fn backend<'a>(shared: &Shared, s: &'a mut Session) -> KvResult<&'a mut Backend> {
    let generation = *shared.generation.borrow();
    if s.backend
        .as_ref()
        .is_some_and(|b| b.generation != generation)
        && s.at_rest()
    {
        s.backend = None;
    }
    if s.backend.is_none() {
        let url = shared
            .backend
            .lock()
            .map(|b| b.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        let mut conn = Conn::connect(&url.with_db(s.db)).await?;
        let client_id = match conn.call(cmd!["CLIENT", "ID"]).await? {
            Value::Int(id) => id,
            other => return Err(conn.protocol("CLIENT ID", &other.shape())),
        };
        let server = conn.server().to_string();
        let (mut io, mut buf) = conn.into_parts();
        let mut setup = Vec::new();
        let mut answers = 0;
        if let Some(p) = &s.proto {
            resp::encode(&mut setup, &[b"HELLO", p]);
            answers += 1;
        }
        if let Some(n) = &s.name {
            resp::encode(&mut setup, &[b"CLIENT", b"SETNAME", n]);
            answers += 1;
        }
        if answers > 0 {
            let io_err = |reason: String| KvError::Io {
                server: server.clone(),
                reason,
            };
            io.write_all(&setup)
                .await
                .map_err(|e| io_err(format!("write: {e}")))?;
            for _ in 0..answers {
                let frame = read_frame(&mut io, &mut buf).await.map_err(io_err)?;
                if frame.first() == Some(&b'-') {
                    return Err(io_err(
                        "the backend refused the session's HELLO or name".into(),
                    ));
                }
            }
        }
        s.backend = Some(Backend {
            url,
            generation,
            client_id,
            io,
            buf,
        });
    }
    s.backend.as_mut().ok_or_else(|| KvError::Io {
        server: String::new(),
        reason: "no backend".into(),
    })
}

/// Reads one whole frame from a backend (a setup answer: small).
async fn read_frame(io: &mut Box<dyn Io>, buf: &mut Vec<u8>) -> Result<Vec<u8>, String> {
    let mut scanner = resp::FrameScanner::default();
    let mut frame = Vec::new();
    loop {
        let got = scanner
            .scan(buf)
            .map_err(|resp::Malformed(m)| format!("backend protocol: {m}"))?;
        frame.extend(buf.drain(..got.consumed));
        if got.done {
            return Ok(frame);
        }
        read_backend(io, buf).await?;
    }
}

async fn read_backend(io: &mut Box<dyn Io>, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.reserve(64 * 1024);
    match io.read_buf(buf).await {
        Ok(0) => Err("the backend closed the connection".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("backend read: {e}")),
    }
}

/// How an answer began: all the proxy needs to know of it.
#[derive(Debug, Clone, Copy)]
struct Head {
    /// The frame's type byte.
    kind: u8,
    /// A null (`*-1`, `_`).
    null: bool,
}

/// Passes one answer from the backend into `out` as its bytes arrive, sending `out` to the
/// client whenever it holds FLUSH_AT bytes, and at each read once the answer passes that size:
/// an answer of any size (a `GET` of a 500 MB value,
/// `KEYS *` on millions of keys) streams through in constant memory.
async fn pass_frame(
    b: &mut Backend,
    out: &mut Vec<u8>,
    client: &mut Box<dyn Io>,
) -> Result<Head, End> {
    let mut scanner = resp::FrameScanner::default();
    let mut head = [0u8; 5];
    let mut len = 0usize;
    loop {
        let got = scanner
            .scan(&b.buf)
            .map_err(|resp::Malformed(m)| format!("backend protocol: {m}"))?;
        for (i, byte) in b.buf[..got.consumed].iter().take(5).enumerate() {
            if let Some(slot) = head.get_mut(len + i) {
                *slot = *byte;
            }
        }
        len += got.consumed;
        out.extend(b.buf.drain(..got.consumed));
        if got.done {
            return Ok(Head {
                kind: head[0],
                null: (len == 5 && &head == b"*-1\r\n") || (len == 3 && &head[..3] == b"_\r\n"),
            });
        }
        // Before waiting for more of it: what piled up, or all of a large answer so far (it
        // is not held back to be coalesced with others).
        if out.len() >= FLUSH_AT || (len >= FLUSH_AT && !out.is_empty()) {
            client
                .write_all(out)
                .await
                .map_err(|e| format!("client write: {e}"))?;
            out.clear();
        }
        read_backend(&mut b.io, &mut b.buf).await?;
    }
}

/// Sends the run of commands to the backend and appends their answers to `out`, keeping the
/// session's state (database, protocol, name, MULTI, WATCH) as the answers confirm it.
async fn forward(
    shared: &Shared,
    s: &mut Session,
    run: &mut Vec<Vec<Vec<u8>>>,
    (out, client): (&mut Vec<u8>, &mut Box<dyn Io>),
) -> Result<(), End> {
    if run.is_empty() {
        return Ok(());
    }
    let commands = std::mem::take(run);
    let id = s.id;
    let b = match backend(shared, s).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(session = s.id, "Redis endpoint: backend unreachable: {e}");
            for _ in &commands {
                out.extend(err("ERR Ferry endpoint: the Redis server is unreachable"));
            }
            return Ok(());
        }
    };
    let mut wire = Vec::new();
    let mut blocking = false;
    for c in &commands {
        let refs: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
        resp::encode(&mut wire, &refs);
        blocking |= BLOCKING.contains(&upper(&c[0]).as_str());
    }
    if blocking && let Ok(mut m) = shared.blocked.lock() {
        m.insert(id, (b.url.clone(), b.client_id));
    }
    b.io.write_all(&wire)
        .await
        .map_err(|e| format!("backend write: {e}"))?;
    let mut answers = Vec::with_capacity(commands.len());
    while answers.len() < commands.len() {
        // Answers go out as they come once a batch's pile-up passes FLUSH_AT: neither a
        // pipeline of large answers nor one large answer is held whole.
        let head = pass_frame(b, out, client).await?;
        if out.len() >= FLUSH_AT {
            client
                .write_all(out)
                .await
                .map_err(|e| format!("client write: {e}"))?;
            out.clear();
        }
        if head.kind != b'>' {
            answers.push(Answered {
                ok: !matches!(head.kind, b'-' | b'!'),
                null: head.null,
            });
        }
    }
    if blocking && let Ok(mut m) = shared.blocked.lock() {
        m.remove(&id);
    }
    for (c, ok) in commands.iter().zip(answers) {
        track(s, c, ok);
    }
    Ok(())
}

/// How the server answered a command.
#[derive(Debug, Clone, Copy)]
struct Answered {
    /// Not an error.
    ok: bool,
    /// A null (an EXEC that WATCH aborted).
    null: bool,
}

/// What a command changes in the session, given how it was answered.
fn track(s: &mut Session, c: &[Vec<u8>], ok: Answered) {
    match upper(&c[0]).as_str() {
        "SELECT" if ok.ok => {
            let db = c
                .get(1)
                .and_then(|d| std::str::from_utf8(d).ok()?.parse().ok());
            match db {
                // Inside MULTI the answer is +QUEUED: the SELECT runs only with EXEC.
                Some(db) if s.in_tx => s.queued_db = Some(db),
                Some(db) => s.db = db,
                None => {}
            }
        }
        "MULTI" if ok.ok => s.in_tx = true,
        "EXEC" => {
            if let Some(db) = s.queued_db.take()
                && ok.ok
                && !ok.null
            {
                s.db = db;
            }
            s.in_tx = false;
            s.watching = false;
        }
        "DISCARD" => {
            s.queued_db = None;
            s.in_tx = false;
            s.watching = false;
        }
        "WATCH" if ok.ok => s.watching = true,
        "UNWATCH" if ok.ok => s.watching = false,
        "HELLO" if ok.ok => {
            if let Some(p) = c.get(1) {
                s.proto = Some(p.clone());
            }
            if let Some(i) = c.iter().position(|a| upper(a) == "SETNAME") {
                s.name = c.get(i + 1).cloned();
            }
        }
        "CLIENT" if ok.ok && c.len() > 2 && upper(&c[1]) == "SETNAME" => {
            s.name = Some(c[2].clone())
        }
        "RESET" if ok.ok => {
            s.db = 0;
            s.in_tx = false;
            s.watching = false;
            s.proto = None;
            s.name = None;
        }
        _ => {}
    }
}

/// Pub/sub or MONITOR: bytes both ways until either side closes or the backend changes.
async fn raw(
    shared: &Arc<Shared>,
    s: &mut Session,
    client: &mut Box<dyn Io>,
    pending: Vec<u8>,
) -> Result<(), End> {
    let Some(mut b) = s.backend.take() else {
        return Ok(());
    };
    if !pending.is_empty() {
        b.io.write_all(&pending).await.map_err(|e| e.to_string())?;
    }
    if !b.buf.is_empty() {
        client.write_all(&b.buf).await.map_err(|e| e.to_string())?;
        b.buf.clear();
    }
    let mut generation = shared.generation.subscribe();
    let mut resumed = shared.resumed.subscribe();
    let (mut from_client, mut from_backend) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        tokio::select! {
            // A pause closes the session at once: a subscribed RESP3 client may write, and a
            // RESP2 one may go on after UNSUBSCRIBE; neither may reach the old server once
            // the switch has begun.
            () = async { let _ = resumed.wait_for(|r| !*r).await; } => {
                shared.closed_by_switch.fetch_add(1, SeqCst);
                return Err("closed: the endpoint paused for a switch under a pub/sub session".into());
            }
            n = client.read(&mut from_client) => {
                let n = n.map_err(|e| e.to_string())?;
                if n == 0 { return Ok(()); }
                b.io.write_all(&from_client[..n]).await.map_err(|e| e.to_string())?;
            }
            n = b.io.read(&mut from_backend) => {
                let n = n.map_err(|e| e.to_string())?;
                if n == 0 { return Err("the backend closed the connection".into()); }
                client.write_all(&from_backend[..n]).await.map_err(|e| e.to_string())?;
            }
            () = async { let _ = generation.wait_for(|g| *g != b.generation).await; } => {
                shared.closed_by_switch.fetch_add(1, SeqCst);
                return Err("closed: the endpoint switched servers under a pub/sub or MONITOR session".into());
            }
        }
    }
}

/// The TLS side clients see: a certificate chain and key in PEM files.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> KvResult<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let bad = |what: &std::path::Path, e: String| KvError::BadUrl {
        url: what.display().to_string(),
        reason: e,
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, format!("read certificate: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, format!("certificate PEM: {e}")))?;
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, format!("key PEM: {e}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert, format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| bad(cert, format!("certificate and key: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
