//! The database endpoint on the bed, as ECS and an internal NLB would run it:
//!
//! - [`EndpointFleet`]: `ferry-endpoint` processes (each starting its own PgBouncer), run as
//!   an unprivileged user because PgBouncer refuses to run as root, as the image's user does;
//! - [`Nlb`]: one stable TCP address that spreads new connections over the live tasks (a
//!   connection-level balancer, like an NLB's TCP listener; TLS passes through untouched);
//! - [`PooledApp`]: the app as real ones are — `DATABASE_URL` read **once** at boot, a pool of
//!   persistent connections, named prepared statements, reads and writes mixed, no config
//!   reread ever; every request counted (ok / failed / latency).

use std::{
    collections::BTreeMap,
    os::unix::process::CommandExt,
    process::{Child, Command},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use ferry_pg::PgUrl;
use tokio::net::{TcpListener, TcpStream};

use crate::{bed_var, rehearsal::signal_group, workspace_bin};

/// A local stand-in for an internal NLB: one port, connections spread round-robin over the
/// targets that accept them (a dead task is skipped, as a failed health check removes it).
///
/// With an idle timeout ([`Nlb::start_with_idle_timeout`]) it forgets a flow on which no
/// packet passed for that long and resets both ends, as an NLB does past its TCP idle timeout
/// (350 s by default; its listener's `tcp.idle_timeout.seconds`). Like the NLB it counts every
/// packet, TCP keepalive probes and their acknowledgements included, which never reach a
/// user-space relay as data: it reads them off its own two sockets' segment counters
/// (`TCP_INFO`'s `tcpi_segs_in` / `tcpi_segs_out`, counted by the kernel before it drops a
/// keepalive probe as old data).
#[derive(Debug, Clone)]
pub struct Nlb {
    /// The port clients use.
    pub port: u16,
    targets: Arc<Mutex<Vec<u16>>>,
    /// Flows dropped as idle.
    pub idle_drops: Arc<AtomicU64>,
}

impl Nlb {
    /// Listens on a free port of 127.0.0.1; flows are never dropped as idle.
    pub async fn start() -> Self {
        Self::listen(None).await
    }

    /// Listens on a free port of 127.0.0.1; a flow idle for `idle` is dropped.
    pub async fn start_with_idle_timeout(idle: Duration) -> Self {
        Self::listen(Some(idle)).await
    }

    async fn listen(idle: Option<Duration>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let nlb = Self {
            port,
            targets: Arc::new(Mutex::new(Vec::new())),
            idle_drops: Arc::new(AtomicU64::new(0)),
        };
        let (targets, drops) = (nlb.targets.clone(), nlb.idle_drops.clone());
        let next = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let targets = targets.lock().expect("targets").clone();
                let start = next.fetch_add(1, Ordering::Relaxed);
                let drops = drops.clone();
                tokio::spawn(async move {
                    for i in 0..targets.len() {
                        let port = targets[(start + i) % targets.len()];
                        if let Ok(out) = TcpStream::connect(("127.0.0.1", port)).await {
                            if relay(inbound, out, idle).await {
                                drops.fetch_add(1, Ordering::Relaxed);
                            }
                            return;
                        }
                    }
                });
            }
        });
        nlb
    }

    /// Sets the targets (task ports).
    pub fn set_targets(&self, ports: Vec<u16>) {
        *self.targets.lock().expect("targets") = ports;
    }
}

/// Relays a flow until either side closes it or, with `idle`, until no packet crossed either
/// socket for that long; then resets both ends (linger 0). Whether it was dropped as idle.
async fn relay(mut inbound: TcpStream, mut out: TcpStream, idle: Option<Duration>) -> bool {
    let Some(idle) = idle else {
        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
        return false;
    };
    use std::os::fd::AsRawFd;
    let fds = [inbound.as_raw_fd(), out.as_raw_fd()];
    let quiet = async {
        let mut seen = segments(&fds);
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = segments(&fds);
            if now != seen {
                (seen, since) = (now, Instant::now());
            } else if since.elapsed() >= idle {
                return;
            }
        }
    };
    let dropped = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => false,
        () = quiet => true,
    };
    if dropped {
        for s in [&inbound, &out] {
            #[allow(deprecated)]
            let _ = s.set_linger(Some(Duration::ZERO));
        }
    }
    dropped
}

/// Segments sent and received on each socket, as the kernel counts them (every packet, data
/// or not).
#[allow(unsafe_code)]
fn segments(fds: &[i32]) -> Vec<(u32, u32)> {
    fds.iter()
        .map(|fd| {
            let mut info = [0u8; 256];
            let mut len = info.len() as libc::socklen_t;
            // SAFETY: `info` is a writable buffer of `len` bytes for the kernel's tcp_info.
            let rc = unsafe {
                libc::getsockopt(
                    *fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_INFO,
                    info.as_mut_ptr().cast(),
                    &mut len,
                )
            };
            if rc != 0 || len < 144 {
                return (0, 0);
            }
            // struct tcp_info: tcpi_segs_out at byte 136, tcpi_segs_in at 140.
            let word =
                |at: usize| u32::from_ne_bytes(info[at..at + 4].try_into().unwrap_or([0; 4]));
            (word(136), word(140))
        })
        .collect()
}

/// Where an endpoint task reads its configuration.
#[derive(Debug, Clone)]
pub struct EndpointParams {
    /// The Heroku app.
    pub app: String,
    /// The state table.
    pub table: String,
    /// Whether the tasks run with the template's task role (the bed's table and parameters);
    /// otherwise with the harness's own credentials.
    pub as_task_role: bool,
    /// Source URL parameter.
    pub source_param: String,
    /// Target URL parameter.
    pub target_param: String,
    /// The app fleet's endpoint URL parameter.
    pub client_param: String,
    /// The Redis proxy's parameters (source, target, the app fleet's URL), if the tasks run
    /// one.
    pub redis: Option<(String, String, String)>,
    /// Whether the tasks listen for the cutover directly.
    pub control: Control,
}

/// The endpoint tasks' control channel in a test fleet.
#[derive(Debug, Clone)]
pub enum Control {
    /// None: steered through the state table alone.
    Off,
    /// Every task listens, its key in this SSM parameter (and polls the table too).
    On(String),
    /// The first, third… task listens and reads the table only at start and once a minute
    /// after (so only the channel can move it in time); the others have no channel. A
    /// cutover must then steer both ways at once.
    Mixed(String),
}

/// The endpoint's tasks, each a `ferry-endpoint` process with its PgBouncer.
#[derive(Debug)]
pub struct EndpointFleet {
    /// Task id → (port, process).
    pub tasks: BTreeMap<String, (u16, Child)>,
    params: EndpointParams,
    /// The balancer in front.
    pub nlb: Nlb,
    /// The balancer in front of the Redis proxies, and each task's Redis port.
    pub redis: Option<(Nlb, BTreeMap<String, u16>)>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl EndpointFleet {
    /// Starts `n` tasks behind `nlb`.
    pub async fn start_behind(params: EndpointParams, n: usize, nlb: Nlb) -> Self {
        Self::start_with_redis(params, n, nlb, None).await
    }

    /// Starts `n` tasks behind `nlb`, their Redis proxies (when the params name them) behind
    /// `redis_nlb`.
    pub async fn start_with_redis(
        params: EndpointParams,
        n: usize,
        nlb: Nlb,
        redis_nlb: Option<Nlb>,
    ) -> Self {
        let mut fleet = Self {
            tasks: BTreeMap::new(),
            params,
            nlb,
            redis: redis_nlb.map(|n| (n, BTreeMap::new())),
        };
        for i in 0..n {
            fleet.add(&format!("ep-{i}-{}", crate::unique(""))).await;
        }
        fleet
    }

    /// Starts one more task and adds it to the balancer once PgBouncer listens.
    pub async fn add(&mut self, task_id: &str) {
        let port = free_port();
        // Under the bed's directory, so `bed.py down` finds (and stops) a task that a killed
        // test left behind.
        let dir = std::path::PathBuf::from(bed_var("FERRY_BED_DIR"))
            .join("endpoints")
            .join(task_id);
        let _ = std::fs::remove_dir_all(&dir);
        let p = &self.params;
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"])
            .arg(workspace_bin("ferry-endpoint"))
            .env("FERRY_STATE_TABLE", &p.table)
            .env("FERRY_ENDPOINT_APP", &p.app)
            .env("FERRY_ENDPOINT_SOURCE_PARAM", &p.source_param)
            .env("FERRY_ENDPOINT_TARGET_PARAM", &p.target_param)
            .env("FERRY_ENDPOINT_CLIENT_PARAM", &p.client_param)
            .env("FERRY_ENDPOINT_TASK_ID", task_id)
            .env("FERRY_PGBOUNCER", bed_var("FERRY_BED_PGBOUNCER"))
            .env("FERRY_ENDPOINT_DIR", &dir)
            .env("FERRY_ENDPOINT_LISTEN", "127.0.0.1")
            .env("FERRY_ENDPOINT_PORT", port.to_string())
            .env("FERRY_ENDPOINT_HEARTBEAT_MS", "500")
            .env("FERRY_ENDPOINT_POLL_MS", "25")
            // Credentials are read again every second (60 s in production), so a test can
            // change a parameter under a running task.
            .env("FERRY_ENDPOINT_REFRESH_S", "1")
            // FERRY_TEST_ENDPOINT_LOGS=1 shows the tasks' logs; a filter instead of 1
            // (`ferry_endpoint=debug`) sets their level too.
            .env(
                "RUST_LOG",
                std::env::var("FERRY_TEST_ENDPOINT_LOGS")
                    .ok()
                    .filter(|v| v != "1")
                    .unwrap_or_else(|| "info".into()),
            )
            .stdout(std::process::Stdio::null())
            .process_group(0);
        if std::env::var("FERRY_TEST_ENDPOINT_LOGS").is_err() {
            cmd.stderr(std::process::Stdio::null());
        }
        if p.as_task_role {
            cmd.envs(crate::role_env("ferry-endpoint"));
        }
        let redis_port = free_port();
        if let Some((source, target, client)) = &p.redis {
            cmd.env("FERRY_ENDPOINT_REDIS_SOURCE_PARAM", source)
                .env("FERRY_ENDPOINT_REDIS_TARGET_PARAM", target)
                .env("FERRY_ENDPOINT_REDIS_CLIENT_PARAM", client)
                .env("FERRY_ENDPOINT_REDIS_PORT", redis_port.to_string());
        }
        let listens = match &p.control {
            Control::Off => None,
            Control::On(key) => {
                // Told each step directly, the table is the fallback: read it less often
                // (every request to the emulator costs the machine's CPU).
                cmd.env("FERRY_ENDPOINT_POLL_MS", "250");
                Some(key)
            }
            Control::Mixed(key) => self.tasks.len().is_multiple_of(2).then(|| {
                cmd.env("FERRY_ENDPOINT_POLL_MS", "60000");
                key
            }),
        };
        if let Some(key) = listens {
            cmd.env("FERRY_ENDPOINT_CONTROL_KEY_PARAM", key)
                .env("FERRY_ENDPOINT_CONTROL_HOST", "127.0.0.1")
                .env("FERRY_ENDPOINT_CONTROL_PORT", free_port().to_string());
        }
        let child = cmd.spawn().expect("start ferry-endpoint");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut ports = vec![port];
        if p.redis.is_some() {
            ports.push(redis_port);
        }
        for port in ports {
            while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                assert!(
                    Instant::now() < deadline,
                    "endpoint task {task_id} did not listen on {port} within 30 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.tasks.insert(task_id.to_string(), (port, child));
        self.nlb
            .set_targets(self.tasks.values().map(|(p, _)| *p).collect());
        if let Some((nlb, ports)) = &mut self.redis {
            ports.insert(task_id.to_string(), redis_port);
            nlb.set_targets(ports.values().copied().collect());
        }
    }

    /// Kills a task and its PgBouncer at once (SIGKILL to the process group), as a crashed
    /// container; the balancer stops sending it connections.
    pub fn kill(&mut self, task_id: &str) {
        if let Some((_, mut child)) = self.tasks.remove(task_id) {
            signal_group(&mut child, "KILL");
        }
        self.nlb
            .set_targets(self.tasks.values().map(|(p, _)| *p).collect());
        if let Some((nlb, ports)) = &mut self.redis {
            ports.remove(task_id);
            nlb.set_targets(ports.values().copied().collect());
        }
    }

    /// Task ids.
    pub fn ids(&self) -> Vec<String> {
        self.tasks.keys().cloned().collect()
    }
}

impl Drop for EndpointFleet {
    fn drop(&mut self) {
        for (_, (_, child)) in self.tasks.iter_mut() {
            signal_group(child, "TERM");
        }
    }
}

/// What a request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An INSERT.
    Write,
    /// A SELECT.
    Read,
}

/// One request of the app.
#[derive(Debug, Clone)]
pub struct Served {
    /// When it started.
    pub started: DateTime<Utc>,
    /// How long it took.
    pub latency: Duration,
    /// Read or write.
    pub kind: Kind,
    /// (written id, the serving server's port) for a write; (0, port) for a read; or the error.
    pub result: Result<(i64, i32), String>,
}

/// A pool of persistent connections to the URL an app read once at boot, each with its named
/// prepared statements; a broken connection is reopened to the same URL (as pools do), never
/// to a reread one.
#[derive(Debug)]
pub struct Pool {
    url: tokio::sync::OnceCell<PgUrl>,
    slots: Vec<tokio::sync::Mutex<Option<Conn>>>,
    next: AtomicUsize,
    /// Connections opened, the first ones included.
    pub connects: AtomicU64,
}

impl Pool {
    /// A pool of `size` connections, not booted yet.
    pub fn new(size: usize) -> Self {
        Self {
            url: tokio::sync::OnceCell::new(),
            slots: (0..size.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            connects: AtomicU64::new(0),
        }
    }

    /// Boots with `read_url` (called until it succeeds once, then never again).
    pub async fn boot<F, Fut>(&self, read_url: F) -> Result<&PgUrl, String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<String, String>>,
    {
        self.url
            .get_or_try_init(|| async {
                PgUrl::parse(&read_url().await?).map_err(|e| e.to_string())
            })
            .await
    }

    /// One request on the next connection: a write (`side` is recorded in the row) returns
    /// (id, server port), a read (0, server port).
    pub async fn request(&self, kind: Kind, n: i64, side: &str) -> Result<(i64, i32), String> {
        let url = self.url.get().ok_or("the app has not booted")?;
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let mut guard = slot.lock().await;
        if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
            self.connects.fetch_add(1, Ordering::Relaxed);
            *guard = Some(open(url).await?);
        }
        let conn = guard.as_ref().ok_or("no connection")?;
        let row = match kind {
            Kind::Write => conn.client.query_one(&conn.write, &[&n, &side]).await,
            Kind::Read => conn.client.query_one(&conn.read, &[&(n - 100)]).await,
        };
        match row {
            Ok(r) => Ok((if kind == Kind::Write { r.get(0) } else { 0 }, r.get(1))),
            Err(e) => {
                let msg = ferry_pg::describe(&e);
                if conn.client.is_closed() {
                    *guard = None;
                }
                Err(msg)
            }
        }
    }
}

/// A pooled connection with its prepared statements.
#[derive(Debug)]
struct Conn {
    client: tokio_postgres::Client,
    write: tokio_postgres::Statement,
    read: tokio_postgres::Statement,
}

const WRITE_SQL: &str = "INSERT INTO orders (customer_id, side, note) VALUES (1 + ($1::bigint % 100), $2, 'order ' || $1::text) RETURNING id, inet_server_port()";
const READ_SQL: &str = "SELECT count(*)::bigint, inet_server_port() FROM orders WHERE id > $1";

async fn open(url: &PgUrl) -> Result<Conn, String> {
    let client = url.connect_as_app().await.map_err(|e| e.to_string())?;
    // Named statements, prepared once per connection, as Rails and most drivers do.
    let write = client
        .prepare(WRITE_SQL)
        .await
        .map_err(|e| ferry_pg::describe(&e))?;
    let read = client
        .prepare(READ_SQL)
        .await
        .map_err(|e| ferry_pg::describe(&e))?;
    Ok(Conn {
        client,
        write,
        read,
    })
}

/// Which request the `n`th of a schedule of `writes` + `reads` a second is.
pub fn kind_of(n: u64, writes: u32, reads: u32) -> Kind {
    let total = u64::from(writes + reads).max(1);
    if n % total < u64::from(writes) {
        Kind::Write
    } else {
        Kind::Read
    }
}

/// The app: reads its URL once, pools connections, prepares statements, never rereads config.
#[derive(Debug, Clone)]
pub struct PooledApp {
    stop: Arc<AtomicBool>,
    /// Every request, in completion order.
    pub log: Arc<Mutex<Vec<Served>>>,
    pool: Arc<Pool>,
}

impl PooledApp {
    /// Boots the app with `database_url` (read by the caller once, as an app does at boot)
    /// and `pool` connections, then serves `writes` + `reads` requests a second.
    pub async fn start(database_url: &str, pool: usize, writes: u32, reads: u32) -> Self {
        let url = database_url.to_string();
        let pool = Arc::new(Pool::new(pool));
        pool.boot(|| async { Ok(url) })
            .await
            .expect("the app's DATABASE_URL parses");
        let app = Self {
            stop: Arc::new(AtomicBool::new(false)),
            log: Arc::new(Mutex::new(Vec::new())),
            pool,
        };
        let me = app.clone();
        tokio::spawn(async move {
            let period = Duration::from_secs_f64(1.0 / f64::from((writes + reads).max(1)));
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n: u64 = 0;
            while !me.stop.load(Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                let kind = kind_of(n, writes, reads);
                let me2 = me.clone();
                tokio::spawn(async move {
                    let started = Utc::now();
                    let t0 = Instant::now();
                    let result = tokio::time::timeout(
                        Duration::from_secs(30),
                        me2.pool.request(kind, n as i64, "aws"),
                    )
                    .await
                    .unwrap_or_else(|_| Err("timed out after 30 s".into()));
                    me2.log.lock().expect("log").push(Served {
                        started,
                        latency: t0.elapsed(),
                        kind,
                        result,
                    });
                });
            }
        });
        app
    }

    /// Connections opened so far.
    pub fn connects(&self) -> u64 {
        self.pool.connects.load(Ordering::Relaxed)
    }

    /// Stops sending requests and waits for those in flight.
    pub async fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    /// Failed requests, with their errors.
    pub fn failures(&self) -> Vec<String> {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter_map(|s| s.result.as_ref().err().cloned())
            .collect()
    }

    /// Acknowledged writes: (id, server port).
    pub fn acked_writes(&self) -> Vec<(i64, i32)> {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|s| s.kind == Kind::Write)
            .filter_map(|s| s.result.as_ref().ok().copied())
            .collect()
    }

    /// Requests served so far.
    pub fn served(&self) -> usize {
        self.log.lock().expect("log").len()
    }
}
