//! The supervisor: one per endpoint task. It renders PgBouncer's files from SSM, runs
//! PgBouncer, and converges it to the desired state stored for the app (paused or not, which
//! backend), reporting each number it reached — or why it could not — with its task id.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use chrono::Utc;
use ferry_core::{
    ParamStore,
    endpoint::{Backend, EndpointDesired, EndpointStore, EndpointTask},
};
use ferry_pg::PgUrl;
use rand::Rng;
use tokio::{
    process::{Child, Command},
    sync::mpsc,
};
use tokio_postgres::Client;

use ferry_core::control::{ControlReply, MIN_KEY};

use crate::{
    EndpointError,
    admin::{self, Console},
    control,
    ini::{self, BackendEntry, ClientLogin, Layout},
};

/// What a task is told by its environment (see `ferry-endpoint`'s docs).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Heroku app whose endpoint this is.
    pub app: String,
    /// This task's id.
    pub task_id: String,
    /// SSM parameter holding the source (Heroku Postgres) URL.
    pub source_param: String,
    /// SSM parameter holding the target (RDS) URL.
    pub target_param: String,
    /// SSM parameter holding the URL the app fleet uses to reach the endpoint (its user,
    /// password and database name are what clients log in with).
    pub client_param: String,
    /// The `pgbouncer` binary.
    pub pgbouncer: PathBuf,
    /// Private working directory (created 0700).
    pub dir: PathBuf,
    /// TCP listen address.
    pub listen_addr: String,
    /// TCP port.
    pub port: u16,
    /// Certificate and key presented to clients; a self-signed pair is made when absent.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `default_pool_size`.
    pub pool_size: u32,
    /// `max_client_conn`.
    pub max_client_conn: u32,
    /// How often the desired state is read.
    pub poll: Duration,
    /// How often the report is rewritten when nothing changes.
    pub heartbeat: Duration,
    /// How often the URLs are read again from SSM (credentials rotate).
    pub refresh: Duration,
    /// The Redis proxy beside PgBouncer (spec `redis`), if this endpoint runs one.
    pub redis: Option<RedisSettings>,
    /// The control channel ([`crate::control`]), if on.
    pub control: Option<ControlSettings>,
}

/// Where the control channel listens and what it is signed with.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    /// SSM SecureString holding the key requests are signed with.
    pub key_param: String,
    /// TCP port (on [`Settings::listen_addr`]).
    pub port: u16,
    /// The host the control plane reaches this task at (its private IP on ECS).
    pub advertise_host: String,
}

/// Where the Redis proxy reads its servers and listens.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// SSM parameter holding the Heroku Redis URL.
    pub source_param: String,
    /// SSM parameter holding the ElastiCache URL.
    pub target_param: String,
    /// SSM parameter holding the URL the app fleet uses to reach the proxy (its password is
    /// what clients log in with).
    pub client_param: String,
    /// TCP port.
    pub port: u16,
    /// The databases the app may use through the proxy (the migration's `redis.databases`);
    /// empty: the one the client URL names.
    pub databases: Vec<u32>,
}

/// The Redis proxy and the URLs it switches between.
struct RedisSide {
    proxy: ferry_kv::proxy::Proxy,
    source: ferry_kv::RedisUrl,
    target: ferry_kv::RedisUrl,
    backend: Backend,
    _server: tokio::task::JoinHandle<()>,
}

impl RedisSide {
    fn url(&self, side: Backend) -> &ferry_kv::RedisUrl {
        match side {
            Backend::Source => &self.source,
            Backend::Target => &self.target,
        }
    }
}

/// The Redis URLs from SSM: source, target, client.
async fn read_redis_urls(
    r: &RedisSettings,
    params: &dyn ParamStore,
) -> Result<[ferry_kv::RedisUrl; 3], EndpointError> {
    let mut out = Vec::new();
    for name in [&r.source_param, &r.target_param, &r.client_param] {
        let text = params
            .get(name)
            .await
            .map_err(|e| EndpointError::Params(e.to_string()))?;
        out.push(
            ferry_kv::RedisUrl::parse(&text).map_err(|e| EndpointError::Config {
                field: name.clone(),
                reason: e.to_string(),
            })?,
        );
    }
    let urls: [ferry_kv::RedisUrl; 3] = out
        .try_into()
        .map_err(|_| EndpointError::Io("three Redis URLs".into()))?;
    check_redis_urls(r, &urls)?;
    Ok(urls)
}

/// The Redis URLs the endpoint may use: servers reached over TLS unless on this host (the
/// migration's credentials must not cross the network in the clear), and a client password of
/// 12 characters or more.
fn check_redis_urls(
    r: &RedisSettings,
    [source, target, client]: &[ferry_kv::RedisUrl; 3],
) -> Result<(), EndpointError> {
    for (url, param) in [(source, &r.source_param), (target, &r.target_param)] {
        let local = matches!(
            url.host.as_str(),
            "127.0.0.1" | "::1" | "[::1]" | "localhost"
        );
        if url.tls.is_none() && !local {
            return Err(EndpointError::Config {
                field: param.clone(),
                reason: format!(
                    "redis:// to {} sends the migration's password in the clear; use rediss:// (Heroku Key-Value Store and ElastiCache with in-transit encryption both serve TLS)",
                    url.host
                ),
            });
        }
    }
    if client.password().is_some_and(|p| p.expose().len() < 12) {
        return Err(EndpointError::Config {
            field: r.client_param.clone(),
            reason: "the app fleet's Redis password must have at least 12 characters".into(),
        });
    }
    Ok(())
}

/// Starts the Redis proxy on `backend`, paused if the desired state is.
async fn start_redis(
    s: &Settings,
    params: &dyn ParamStore,
    tls: &(PathBuf, PathBuf),
    want: &EndpointDesired,
) -> Result<Option<RedisSide>, EndpointError> {
    let Some(r) = &s.redis else {
        return Ok(None);
    };
    let [source, target, client] = read_redis_urls(r, params).await?;
    let Some(password) = client.password().cloned() else {
        return Err(EndpointError::Config {
            field: r.client_param.clone(),
            reason: "the app fleet's Redis URL has no password; give it one (rediss://:password@host:port)".into(),
        });
    };
    let backend = match want.backend {
        Backend::Source => source.clone(),
        Backend::Target => target.clone(),
    };
    let proxy = ferry_kv::proxy::Proxy::new(
        backend,
        client.username.clone(),
        password,
        s.max_client_conn as usize,
    );
    proxy.limit_databases(if r.databases.is_empty() {
        vec![client.db]
    } else {
        r.databases.clone()
    });
    let acceptor = ferry_kv::proxy::tls_acceptor(&tls.0, &tls.1)
        .map_err(|e| EndpointError::Io(format!("Redis proxy TLS: {e}")))?;
    let host = if s.listen_addr == "*" {
        "0.0.0.0"
    } else {
        s.listen_addr.as_str()
    };
    let listener = tokio::net::TcpListener::bind((host, r.port))
        .await
        .map_err(|e| EndpointError::Io(format!("Redis proxy listen on {host}:{}: {e}", r.port)))?;
    let server = proxy.serve(listener, Some(acceptor));
    if want.paused {
        proxy
            .pause(Duration::from_millis(want.pause_timeout_ms))
            .await
            .map_err(|e| EndpointError::Io(format!("Redis proxy pause: {e}")))?;
    }
    Ok(Some(RedisSide {
        proxy,
        source,
        target,
        backend: want.backend,
        _server: server,
    }))
}

/// The URLs as read from SSM.
struct Urls {
    source: (PgUrl, BackendEntry),
    target: (PgUrl, BackendEntry),
    client: ClientLogin,
}

impl Urls {
    fn backend(&self, side: Backend) -> &(PgUrl, BackendEntry) {
        match side {
            Backend::Source => &self.source,
            Backend::Target => &self.target,
        }
    }
}

async fn read_urls(s: &Settings, params: &dyn ParamStore) -> Result<Urls, EndpointError> {
    let read = |name: String| async move {
        let text = params
            .get(&name)
            .await
            .map_err(|e| EndpointError::Params(e.to_string()))?;
        PgUrl::parse(&text).map_err(|e| EndpointError::Config {
            field: name.clone(),
            reason: e.to_string(),
        })
    };
    let source = read(s.source_param.clone()).await?;
    let target = read(s.target_param.clone()).await?;
    let client = read(s.client_param.clone()).await?;
    Ok(Urls {
        source: (
            source.clone(),
            BackendEntry::from_url(Backend::Source, &source, &s.source_param)?,
        ),
        target: (
            target.clone(),
            BackendEntry::from_url(Backend::Target, &target, &s.target_param)?,
        ),
        client: ClientLogin::from_url(&client, &s.client_param)?,
    })
}

/// Writes `text` to `path` readable by this user only.
async fn write_private(path: &Path, text: &str) -> Result<(), EndpointError> {
    let io = |e: std::io::Error| EndpointError::Io(format!("write {}: {e}", path.display()));
    let tmp = path.with_extension("tmp");
    tokio::fs::write(&tmp, text).await.map_err(io)?;
    tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .await
        .map_err(io)?;
    tokio::fs::rename(&tmp, path).await.map_err(io)
}

/// A self-signed certificate for client TLS, made with the image's openssl.
async fn self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), EndpointError> {
    let (cert, key) = (dir.join("client-tls.crt"), dir.join("client-tls.key"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "825",
        ])
        .args(["-subj", "/CN=ferry-endpoint", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| EndpointError::Io(format!("run openssl: {e}")))?;
    if !out.status.success() {
        return Err(EndpointError::Io(format!(
            "openssl could not make a certificate: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok((cert, key))
}

/// How long a successful login check before a retarget stands for the retarget itself (the
/// URLs in use did not change meanwhile: a refresh clears it).
const PRECHECK_VALID: Duration = Duration::from_secs(10);

/// The other backend.
fn other(b: Backend) -> Backend {
    match b {
        Backend::Source => Backend::Target,
        Backend::Target => Backend::Source,
    }
}

/// Logs in to a backend as the pool would (TLS, its role and password), within 3 s (well
/// inside the 5 s after which the control plane takes a silent task for gone).
async fn login_check(url: &PgUrl, to: Backend) -> Result<(), EndpointError> {
    match tokio::time::timeout(Duration::from_secs(3), url.connect_as_app()).await {
        Ok(Ok(_client)) => Ok(()),
        Ok(Err(e)) => Err(EndpointError::BackendRefused {
            backend: to,
            reason: e.to_string(),
        }),
        Err(_) => Err(EndpointError::BackendRefused {
            backend: to,
            reason: "no answer within 3 s".into(),
        }),
    }
}

/// A login check started ahead of a retarget: the backend, when, and the running check.
type Precheck = (
    Backend,
    tokio::time::Instant,
    tokio::task::JoinHandle<Result<(), EndpointError>>,
);

/// What the task is now.
#[derive(Debug, Clone, Copy)]
struct Now {
    seq: u64,
    paused: bool,
    backend: Backend,
}

/// A running endpoint task.
struct Task<'a> {
    s: &'a Settings,
    layout: Layout,
    console: Console,
    admin: Client,
    urls: Urls,
    now: Now,
    error: Option<String>,
    version: String,
    started_at: chrono::DateTime<Utc>,
    /// The login check started ahead of a retarget: (backend, when, the check).
    checked: Option<Precheck>,
    /// The Redis proxy, if this endpoint runs one.
    redis: Option<RedisSide>,
    /// Where the control channel is reached, if on.
    control: Option<String>,
    /// The current or last hold of the app's queries.
    hold: Option<ferry_core::endpoint::Hold>,
}

/// The task's private directory (created 0700) and PgBouncer's layout in it, with the
/// client certificate given or a self-signed one made there.
async fn prepare_dir(s: &Settings) -> Result<Layout, EndpointError> {
    let io = |e: std::io::Error| EndpointError::Io(format!("{}: {e}", s.dir.display()));
    tokio::fs::create_dir_all(&s.dir).await.map_err(io)?;
    tokio::fs::set_permissions(&s.dir, std::fs::Permissions::from_mode(0o700))
        .await
        .map_err(io)?;
    let client_tls = match &s.tls {
        Some(pair) => pair.clone(),
        None => self_signed(&s.dir).await?,
    };
    Ok(Layout {
        dir: s.dir.clone(),
        listen_addr: s.listen_addr.clone(),
        port: s.port,
        client_tls,
        pool_size: s.pool_size,
        max_client_conn: s.max_client_conn,
    })
}

/// The URLs read again from SSM (PostgreSQL's, and the Redis proxy's when it runs).
type Refreshed = (
    Result<Urls, EndpointError>,
    Option<Result<[ferry_kv::RedisUrl; 3], EndpointError>>,
);

/// A read or write of the loop's that runs beside it: the loop never waits on the state
/// table or SSM, so a desired state sent directly is acted on at once.
type Background<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Resolves when the background work in `slot` does (never, when there is none).
async fn finished<T>(slot: &mut Option<Background<'_, T>>) -> T {
    match slot.as_mut() {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// The task's report to the state table: one write at a time, the latest snapshot next.
struct Reporter<'a> {
    store: &'a dyn EndpointStore,
    writing: Option<Background<'a, ()>>,
    next: Option<EndpointTask>,
    last: tokio::time::Instant,
}

impl<'a> Reporter<'a> {
    fn publish(&mut self, report: EndpointTask) {
        self.last = tokio::time::Instant::now();
        if self.writing.is_some() {
            self.next = Some(report);
            return;
        }
        let store = self.store;
        self.writing = Some(Box::pin(async move {
            if let Err(e) = store.put_endpoint_task(&report).await {
                tracing::warn!(error = %e, "cannot write the endpoint report");
            }
        }));
    }

    /// A write ended: the snapshot that waited goes next.
    fn written(&mut self) {
        self.writing = None;
        if let Some(next) = self.next.take() {
            self.publish(next);
        }
    }
}

/// Starts the control channel when it is on: reads its key, binds its port, serves.
async fn start_control(
    s: &Settings,
    params: &dyn ParamStore,
) -> Result<Option<(mpsc::Receiver<control::Request>, String)>, EndpointError> {
    let Some(c) = &s.control else {
        return Ok(None);
    };
    // The database endpoint matters more than a fast switch: without a usable key the task
    // runs, steered through the state table alone, and says why.
    let key = match params.get(&c.key_param).await {
        Ok(k) if k.expose().len() >= MIN_KEY => k,
        Ok(_) => {
            tracing::warn!(param = %c.key_param, "the control key has fewer than {MIN_KEY} characters; control channel off (store a random one: openssl rand -hex 32)");
            return Ok(None);
        }
        Err(e) => {
            tracing::warn!(param = %c.key_param, error = %e, "cannot read the control key; control channel off, steered through the state table alone");
            return Ok(None);
        }
    };
    let host = if s.listen_addr == "*" {
        "0.0.0.0"
    } else {
        s.listen_addr.as_str()
    };
    let listener = tokio::net::TcpListener::bind((host, c.port))
        .await
        .map_err(|e| {
            EndpointError::Io(format!("control channel listen on {host}:{}: {e}", c.port))
        })?;
    let (tx, rx) = mpsc::channel(4);
    control::serve(listener, key, s.app.clone(), tx);
    Ok(Some((rx, format!("{}:{}", c.advertise_host, c.port))))
}

/// Runs the task until `shutdown` resolves (clean stop: PgBouncer stopped, report removed) or
/// PgBouncer dies (an error: ECS replaces the task).
pub async fn run(
    s: &Settings,
    store: &dyn EndpointStore,
    params: &dyn ParamStore,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), EndpointError> {
    let (mut told, advertised) = match start_control(s, params).await? {
        Some((rx, addr)) => (Some(rx), Some(addr)),
        None => (None, None),
    };
    let (mut task, mut child) = Task::start(s, store, params, advertised).await?;
    tokio::pin!(shutdown);
    let mut poll = tokio::time::interval(s.poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat = tokio::time::interval(s.heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reporter = Reporter {
        store,
        writing: None,
        next: None,
        last: tokio::time::Instant::now(),
    };
    reporter.publish(task.snapshot());
    let mut polling: Option<Background<'_, ferry_core::StoreResult<Option<EndpointDesired>>>> =
        None;
    let mut refreshing: Option<Background<'_, Refreshed>> = None;
    let mut last_refresh = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = &mut shutdown => {
                let _ = child.kill().await;
                let _ = store.remove_endpoint_task(&s.app, &s.task_id).await;
                tracing::info!(task = %s.task_id, "endpoint task stopped");
                return Ok(());
            }
            status = child.wait() => {
                return Err(EndpointError::PgBouncerExited(
                    status.map(|st| st.to_string()).unwrap_or_else(|e| e.to_string()),
                ));
            }
            Some((want, reply)) = async { match told.as_mut() { Some(rx) => rx.recv().await, None => None } } => {
                let t0 = tokio::time::Instant::now();
                if want.seq > task.now.seq {
                    task.apply(&want).await;
                }
                tracing::debug!(seq = want.seq, ms = t0.elapsed().as_millis() as u64, "told state applied");
                // The answer first: the cutover waits on it; the table's copy follows.
                let _ = reply.send(ControlReply::Report(Box::new(task.snapshot())));
                reporter.publish(task.snapshot());
            }
            _ = poll.tick(), if polling.is_none() => {
                polling = Some(Box::pin(store.endpoint_desired(&s.app)));
            }
            read = finished(&mut polling) => {
                polling = None;
                match read {
                    Ok(Some(want)) if want.seq > task.now.seq => {
                        task.apply(&want).await;
                        reporter.publish(task.snapshot());
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot read the desired endpoint state"),
                }
            }
            () = finished(&mut reporter.writing) => reporter.written(),
            read = finished(&mut refreshing) => {
                refreshing = None;
                task.refresh(read).await;
            }
            _ = beat.tick() => {
                // Not while paused: a change found could not be applied paused anyway. It
                // runs once resumed.
                if refreshing.is_none() && last_refresh.elapsed() >= s.refresh && !task.now.paused {
                    last_refresh = tokio::time::Instant::now();
                    refreshing = Some(Box::pin(async move {
                        let redis = match &s.redis {
                            Some(r) => Some(read_redis_urls(r, params).await),
                            None => None,
                        };
                        (read_urls(s, params).await, redis)
                    }));
                }
                if reporter.last.elapsed() >= s.heartbeat / 2 {
                    reporter.publish(task.snapshot());
                }
            }
        }
    }
}

impl<'a> Task<'a> {
    async fn start(
        s: &'a Settings,
        store: &'a dyn EndpointStore,
        params: &'a dyn ParamStore,
        control: Option<String>,
    ) -> Result<(Task<'a>, Child), EndpointError> {
        let layout = prepare_dir(s).await?;
        let client_tls = layout.client_tls.clone();
        let urls = read_urls(s, params).await?;
        let password: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(40)
            .map(char::from)
            .collect();
        // A task that starts late comes up where the others are.
        let want = store
            .endpoint_desired(&s.app)
            .await?
            .unwrap_or_else(|| EndpointDesired::initial(&s.app));
        write_private(
            &layout.auth_path(),
            &ini::render_auth(&urls.client, &password),
        )
        .await?;
        write_private(
            &layout.ini_path(),
            &ini::render_ini(&layout, &urls.client, &urls.backend(want.backend).1),
        )
        .await?;
        let child = Command::new(&s.pgbouncer)
            .arg(layout.ini_path())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| EndpointError::Io(format!("start {}: {e}", s.pgbouncer.display())))?;
        let console = Console {
            socket_dir: s.dir.clone(),
            port: s.port,
            password,
        };
        let admin = console.wait_ready(Duration::from_secs(20)).await?;
        let version = admin::version(&admin).await?;
        if !admin::supports_prepared_statements(&version) {
            return Err(EndpointError::Config {
                field: "pgbouncer".into(),
                reason: format!(
                    "{version} cannot keep named prepared statements in transaction pooling; 1.21 or newer is needed"
                ),
            });
        }
        let mut task = Task {
            s,
            layout,
            console,
            admin,
            urls,
            now: Now {
                seq: want.seq,
                paused: false,
                backend: want.backend,
            },
            error: None,
            version,
            started_at: Utc::now(),
            checked: None,
            redis: start_redis(s, params, &client_tls, &want).await?,
            control,
            hold: None,
        };
        if want.paused {
            // No client yet: the pause is immediate.
            task.console
                .pause(
                    &mut task.admin,
                    Duration::from_millis(want.pause_timeout_ms),
                )
                .await?;
            task.now.paused = true;
            task.hold = Some(ferry_core::endpoint::Hold {
                from: Utc::now(),
                to: None,
            });
        }
        tracing::info!(task = %s.task_id, version = %task.version, backend = %want.backend, paused = want.paused, "endpoint task up");
        Ok((task, child))
    }

    /// Converges to `want` (read from the table or told directly); just paused, starts the
    /// login check of the other database, since a retarget usually follows: it then runs
    /// while the cutover freezes and drains, not inside the switch (never after the retarget
    /// itself: the resume must not wait behind it).
    async fn apply(&mut self, want: &EndpointDesired) {
        let before = self.now;
        self.converge(want).await;
        let just_paused = !before.paused && self.now.paused && before.backend == self.now.backend;
        if just_paused && self.error.is_none() {
            self.precheck(other(self.now.backend));
        }
    }

    /// Reaches `want` step by step; on a failure leaves the endpoint on the backend it had
    /// (never half-switched), paused only if `want` is, and records why.
    async fn converge(&mut self, want: &EndpointDesired) {
        let before = self.now;
        let outcome = self.converge_steps(want).await;
        self.now.seq = want.seq;
        match outcome {
            Ok(()) => {
                self.error = None;
                tracing::info!(seq = want.seq, paused = self.now.paused, backend = %self.now.backend, "endpoint converged");
            }
            Err(e) => {
                tracing::error!(seq = want.seq, error = %e, "endpoint could not reach the desired state; back on the {}", before.backend);
                self.error = Some(e.to_string());
                if self.now.backend != before.backend
                    && let Err(back) = self.retarget(before.backend).await
                {
                    tracing::error!(error = %back, "could not go back to the previous backend");
                }
                // Paused stays paused: the control plane resumes once the database the pool
                // points at takes writes again (a source still frozen would hand new server
                // connections a read-only session). A pause that timed out resumed already.
                if !want.paused && self.now.paused {
                    match self.console.resume(&self.admin).await {
                        Ok(()) => {
                            self.now.paused = false;
                            if let Some(h) = self.hold.as_mut() {
                                h.to = Some(Utc::now());
                            }
                        }
                        Err(r) => {
                            tracing::error!(error = %r, "could not resume after a failed change")
                        }
                    }
                }
            }
        }
    }

    async fn converge_steps(&mut self, want: &EndpointDesired) -> Result<(), EndpointError> {
        let limit = Duration::from_millis(want.pause_timeout_ms);
        // A retarget always happens paused, so no transaction spans two servers.
        let pause_needed = want.paused || want.backend != self.now.backend;
        if pause_needed && !self.now.paused {
            // PgBouncer and the Redis proxy pause together; both paused or neither (a failed
            // pause resumed itself, the other one is resumed here).
            let since = Utc::now();
            let (console, admin, redis) = (&self.console, &mut self.admin, self.redis.as_ref());
            let (pg, kv) = tokio::join!(console.pause(admin, limit), async {
                match redis {
                    Some(r) => r.proxy.pause(limit).await.map(|_| ()),
                    None => Ok(()),
                }
            });
            if pg.is_err()
                && let Some(r) = &self.redis
            {
                r.proxy.resume();
            }
            if let Err(e) = kv {
                if pg.is_ok()
                    && let Err(back) = self.console.resume(&self.admin).await
                {
                    tracing::error!(error = %back, "could not resume PgBouncer after the Redis proxy's pause failed");
                }
                pg?;
                return Err(EndpointError::Io(format!("Redis proxy: {e}")));
            }
            pg?;
            self.now.paused = true;
            self.hold = Some(ferry_core::endpoint::Hold {
                from: since,
                to: None,
            });
        }
        if want.backend != self.now.backend {
            self.retarget(want.backend).await?;
        }
        if !want.paused && self.now.paused {
            let t0 = tokio::time::Instant::now();
            self.console.resume(&self.admin).await?;
            tracing::debug!(ms = t0.elapsed().as_millis() as u64, "PgBouncer resumed");
            if let Some(r) = &self.redis {
                r.proxy.resume();
            }
            self.now.paused = false;
            if let Some(h) = self.hold.as_mut() {
                h.to = Some(Utc::now());
            }
        }
        Ok(())
    }

    /// Starts logging in to `to` with the URL it would switch to, in the background (the loop
    /// keeps polling and reporting); a retarget to `to` within [`PRECHECK_VALID`] waits for
    /// it instead of logging in again.
    fn precheck(&mut self, to: Backend) {
        let url = self.urls.backend(to).0.clone();
        let redis = self.redis.as_ref().map(|r| r.url(to).clone());
        let check = tokio::spawn(async move {
            let redis = async {
                match &redis {
                    Some(u) => ferry_kv::proxy::Proxy::check(u).await.map_err(|e| {
                        EndpointError::BackendRefused {
                            backend: to,
                            reason: format!("Redis: {e}"),
                        }
                    }),
                    None => Ok(()),
                }
            };
            let t0 = tokio::time::Instant::now();
            let (pg, redis) = tokio::join!(login_check(&url, to), redis);
            tracing::debug!(
                ms = t0.elapsed().as_millis() as u64,
                ok = pg.is_ok() && redis.is_ok(),
                "login to the {to} checked ahead"
            );
            pg.and(redis)
        });
        self.checked = Some((to, tokio::time::Instant::now(), check));
    }

    /// Checks the new backend accepts our login, rewrites the ini, reloads, and confirms
    /// PgBouncer now points there.
    async fn retarget(&mut self, to: Backend) -> Result<(), EndpointError> {
        let t0 = tokio::time::Instant::now();
        let fresh = match self.checked.take() {
            Some((b, at, check)) if b == to && at.elapsed() <= PRECHECK_VALID => {
                matches!(check.await, Ok(Ok(())))
            }
            Some((_, _, check)) => {
                check.abort();
                false
            }
            None => false,
        };
        tracing::debug!(
            fresh,
            ms = t0.elapsed().as_millis() as u64,
            "retarget: login checked ahead"
        );
        if !fresh {
            login_check(&self.urls.backend(to).0, to).await?;
        }
        // Redis first (its login checked ahead with PostgreSQL's, or now); back again if
        // PgBouncer fails.
        let from = self.now.backend;
        if let Some(r) = &mut self.redis {
            let url = r.url(to).clone();
            let moved = if fresh {
                r.proxy.retarget_checked(url)
            } else {
                r.proxy.retarget(url).await
            };
            moved.map_err(|e| EndpointError::BackendRefused {
                backend: to,
                reason: format!("Redis: {e}"),
            })?;
            r.backend = to;
        }
        tracing::debug!(
            ms = t0.elapsed().as_millis() as u64,
            "retarget: Redis proxy moved"
        );
        let switched = self.retarget_pgbouncer(to).await;
        tracing::debug!(
            ms = t0.elapsed().as_millis() as u64,
            "retarget: PgBouncer reloaded and checked"
        );
        if switched.is_err()
            && let Some(r) = &mut self.redis
        {
            match r.proxy.retarget(r.url(from).clone()).await {
                Ok(()) => r.backend = from,
                Err(e) => tracing::error!(error = %e, "the Redis proxy could not go back"),
            }
        }
        switched?;
        self.now.backend = to;
        Ok(())
    }

    /// Rewrites the ini for `to`, reloads, and confirms PgBouncer points there.
    async fn retarget_pgbouncer(&mut self, to: Backend) -> Result<(), EndpointError> {
        let entry = &self.urls.backend(to).1;
        let want_target = (entry.host.clone(), entry.port);
        let t0 = tokio::time::Instant::now();
        write_private(
            &self.layout.ini_path(),
            &ini::render_ini(&self.layout, &self.urls.client, entry),
        )
        .await?;
        let written = t0.elapsed();
        self.console.reload(&self.admin).await?;
        let reloaded = t0.elapsed();
        let has = admin::database_target(&self.admin, &self.urls.client.dbname).await?;
        tracing::debug!(
            written_ms = written.as_millis() as u64,
            reloaded_ms = reloaded.as_millis() as u64,
            checked_ms = t0.elapsed().as_millis() as u64,
            "PgBouncer retargeted"
        );
        if has.as_ref() != Some(&want_target) {
            return Err(EndpointError::Admin {
                what: "RELOAD".into(),
                reason: format!(
                    "PgBouncer still points at {has:?} after the reload, not {want_target:?}"
                ),
            });
        }
        Ok(())
    }

    /// Reads the Redis URLs again; a rotated password of the current server is used by the
    /// backend sessions opened from then on (not while paused: a retarget may be under way).
    /// Takes Redis URLs read again: a rotated password of the current server is used by the
    /// backend sessions opened from then on (not while paused: a retarget may be under way).
    fn refresh_redis(&mut self, read: Option<Result<[ferry_kv::RedisUrl; 3], EndpointError>>) {
        let (Some(r), Some(read)) = (&mut self.redis, read) else {
            return;
        };
        match read {
            Ok([source, target, client]) => {
                // A rotated client password: logins from now on use it (sessions already
                // logged in go on), paused or not.
                if let Some(password) = client.password().cloned()
                    && r.proxy.set_login(client.username.clone(), password)
                {
                    tracing::info!("the app fleet's Redis password changed; new logins use it");
                }
                let changed = match r.backend {
                    Backend::Source => source != r.source,
                    Backend::Target => target != r.target,
                };
                if changed && r.proxy.paused() {
                    return;
                }
                r.source = source;
                r.target = target;
                if changed {
                    r.proxy.refresh(r.url(r.backend).clone());
                    tracing::info!(backend = %r.backend, "Redis credentials changed; new sessions use them");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the Redis URLs; keeping the ones in use")
            }
        }
    }

    /// Rewrites the ini for `urls` (and the auth_file when the client's login changed) and
    /// reloads PgBouncer: new logins must use the new client password, and new server
    /// connections the new backend credentials. Whether it was applied.
    async fn rewrite(&mut self, urls: &Urls, client_changed: bool) -> bool {
        if client_changed {
            let auth = ini::render_auth(&urls.client, &self.console.password);
            if let Err(e) = write_private(&self.layout.auth_path(), &auth).await {
                tracing::warn!(error = %e, "cannot rewrite the auth_file after a credential change");
                return false;
            }
        }
        let entry = &urls.backend(self.now.backend).1;
        let text = ini::render_ini(&self.layout, &urls.client, entry);
        if let Err(e) = write_private(&self.layout.ini_path(), &text).await {
            tracing::warn!(error = %e, "cannot rewrite the ini after a credential change");
            return false;
        }
        if let Err(e) = self.console.reload(&self.admin).await {
            tracing::warn!(error = %e, "cannot reload after a credential change");
            return false;
        }
        true
    }

    /// Takes the URLs read again (Heroku rotates credentials) and rewrites the files if they
    /// changed; keeps the old ones if SSM could not be read.
    async fn refresh(&mut self, read: Refreshed) {
        let (urls, redis) = read;
        self.refresh_redis(redis);
        match urls {
            Ok(urls) => {
                if urls.source.1 != self.urls.source.1 || urls.target.1 != self.urls.target.1 {
                    // A login checked with the old credentials says nothing of the new ones.
                    if let Some((_, _, check)) = self.checked.take() {
                        check.abort();
                    }
                }
                let changed =
                    urls.backend(self.now.backend).1 != self.urls.backend(self.now.backend).1;
                let client_changed = urls.client != self.urls.client;
                if changed || client_changed {
                    // Kept as the old URLs until PgBouncer uses the new ones: a change not
                    // applied now (paused, or the rewrite failed) is seen again next time.
                    if self.now.paused || !self.rewrite(&urls, client_changed).await {
                        return;
                    }
                    tracing::info!(backend = %self.now.backend, client_changed, "credentials changed; reloaded");
                }
                self.urls = urls;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the endpoint's URLs; keeping the ones in use")
            }
        }
    }

    /// The task's report as of now.
    fn snapshot(&self) -> EndpointTask {
        EndpointTask {
            app: self.s.app.clone(),
            task_id: self.s.task_id.clone(),
            started_at: self.started_at,
            heartbeat_at: Utc::now(),
            seq: self.now.seq,
            paused: self.now.paused,
            backend: self.now.backend,
            error: self.error.clone(),
            pgbouncer_version: self.version.clone(),
            source_param: self.s.source_param.clone(),
            target_param: self.s.target_param.clone(),
            redis: self
                .redis
                .as_ref()
                .zip(self.s.redis.as_ref())
                .map(|(r, rs)| ferry_core::endpoint::RedisProxyReport {
                    paused: r.proxy.paused(),
                    backend: r.backend,
                    sessions: r.proxy.sessions() as u64,
                    closed_by_switch: r.proxy.closed_by_switch(),
                    source_param: rs.source_param.clone(),
                    target_param: rs.target_param.clone(),
                }),
            control: self.control.clone(),
            hold: self.hold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RedisSettings {
        RedisSettings {
            source_param: "/p/redis-source".into(),
            target_param: "/p/redis-target".into(),
            client_param: "/p/redis-client".into(),
            port: 6380,
            databases: Vec::new(),
        }
    }

    fn urls(source: &str, client: &str) -> [ferry_kv::RedisUrl; 3] {
        let u = |s: &str| ferry_kv::RedisUrl::parse(s).expect("url");
        [
            u(source),
            u("rediss://:pw@target.cache.amazonaws.com:6379"),
            u(client),
        ]
    }

    #[test]
    fn plaintext_servers_off_this_host_and_short_client_passwords_are_refused() {
        let good_client = "rediss://:a-client-password@127.0.0.1:6380";
        let e = check_redis_urls(
            &settings(),
            &urls(
                "redis://:secret@ec2-1-2-3-4.compute-1.amazonaws.com:6379",
                good_client,
            ),
        )
        .expect_err("plaintext to another host");
        let text = e.to_string();
        assert!(
            text.contains("/p/redis-source") && text.contains("rediss://"),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");
        assert!(
            check_redis_urls(
                &settings(),
                &urls("redis://:pw@127.0.0.1:6379", good_client)
            )
            .is_ok(),
            "plaintext on this host is allowed"
        );
        let e = check_redis_urls(
            &settings(),
            &urls(
                "rediss://:pw@heroku.example:6379",
                "rediss://:short@127.0.0.1:6380",
            ),
        )
        .expect_err("a short client password");
        assert!(e.to_string().contains("/p/redis-client"), "{e}");
    }
}
