//! The database endpoint on real PgBouncer 1.24 and real PostgreSQL: a pooled app with named
//! prepared statements that read its URL once keeps working while the endpoint pauses,
//! switches to the other server and resumes; a pause held past its bound and a backend that
//! refuses the login both leave the endpoint unpaused where it was.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use ferry_core::{
    ParamStore,
    endpoint::{Backend, EndpointDesired, EndpointStore, EndpointTask},
};
use ferry_pg::PgUrl;
use ferry_tests::{
    TestDb,
    endpoint::{EndpointFleet, EndpointParams, PooledApp},
    fresh_store, unique,
};

const SCHEMA: &str = "CREATE TABLE customers (id bigserial PRIMARY KEY, email text);
    INSERT INTO customers (email) SELECT 'c' || g FROM generate_series(1, 100) g;
    CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint REFERENCES customers, side text NOT NULL, note text);";

struct World {
    db: TestDb,
    store: Arc<ferry_aws::DynamoStore>,
    params: ferry_aws::SsmParams,
    p: EndpointParams,
    client_url: String,
}

async fn world() -> World {
    let db = TestDb::heroku_like("ep_").await;
    db.source_app_url()
        .connect()
        .await
        .expect("source")
        .batch_execute(SCHEMA)
        .await
        .expect("source schema");
    let target = db.url(ferry_tests::Side::Target);
    let t = target.connect().await.expect("target");
    t.batch_execute(SCHEMA).await.expect("target schema");
    // Ids handed out on the target start far above the source's, as sequence sync makes them.
    t.batch_execute("SELECT setval('orders_id_seq', 1000000)")
        .await
        .expect("setval");
    let store = fresh_store().await;
    let params =
        ferry_aws::SsmParams::new(aws_sdk_ssm::Client::new(&ferry_aws::sdk_config().await));
    let prefix = format!("/ferry/test/{}", unique("ep"));
    let p = EndpointParams {
        app: unique("app-"),
        table: store.table().to_string(),
        as_task_role: false,
        source_param: format!("{prefix}/source-url"),
        target_param: format!("{prefix}/target-url"),
        client_param: format!("{prefix}/endpoint-url"),
        redis: None,
        control: ferry_tests::endpoint::Control::Off,
    };
    let client_url = format!(
        "postgres://app_user:{}@127.0.0.1:{{port}}/{}?sslmode=require",
        unique("endpoint-client-secret-"),
        db.name()
    );
    params
        .put_secure(&p.source_param, db.source_app_url().expose_secret())
        .await
        .expect("param");
    params
        .put_secure(&p.target_param, target.expose_secret())
        .await
        .expect("param");
    World {
        db,
        store,
        params,
        p,
        client_url,
    }
}

impl World {
    /// Starts `n` tasks and writes the client URL naming the balancer's port.
    async fn fleet(&self, n: usize) -> (EndpointFleet, String) {
        // The balancer's port is known once it listens; the URL goes to SSM before the tasks
        // start (they read it at start), as the template's output is stored before deploy.
        let nlb = ferry_tests::endpoint::Nlb::start().await;
        let url = self.client_url.replace("{port}", &nlb.port.to_string());
        self.params
            .put_secure(&self.p.client_param, &url)
            .await
            .expect("param");
        let fleet = EndpointFleet::start_behind(self.p.clone(), n, nlb).await;
        (fleet, url)
    }

    async fn set(&self, paused: bool, backend: Backend, timeout_ms: u64) -> EndpointDesired {
        self.store
            .set_endpoint_desired(EndpointDesired {
                paused,
                backend,
                pause_timeout_ms: timeout_ms,
                migration_id: "test".into(),
                issued_at: Utc::now(),
                issued_by: "test".into(),
                ..EndpointDesired::initial(&self.p.app)
            })
            .await
            .expect("set desired")
    }

    /// Stores a control key and turns the tasks' control channel on as `control` says; the key.
    async fn control_key(
        &mut self,
        control: fn(String) -> ferry_tests::endpoint::Control,
    ) -> String {
        let key = unique("control-key-0123456789-0123456789-");
        let key_param = format!("{}-control-key", self.p.client_param);
        self.params
            .put_secure(&key_param, &key)
            .await
            .expect("param");
        self.p.control = control(key_param);
        key
    }

    /// Waits until every task in `ids` answered `want` (reached or failed); returns the reports.
    async fn answers(&self, ids: &[String], want: &EndpointDesired) -> Vec<EndpointTask> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let tasks = self.store.endpoint_tasks(&self.p.app).await.expect("tasks");
            let answered: Vec<EndpointTask> = tasks
                .into_iter()
                .filter(|t| ids.contains(&t.task_id) && t.seq >= want.seq)
                .collect();
            if answered.len() == ids.len() {
                return answered;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "tasks did not answer desired state {}",
                want.seq
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The URL with another password (`scheme://user:password@rest`).
fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("scheme");
    let (userinfo, host) = rest.split_once('@').expect("userinfo");
    let user = userinfo.split(':').next().expect("user");
    format!("{scheme}://{user}:{password}@{host}")
}

fn port_of(url: &PgUrl) -> i32 {
    url.host_port().expect("tcp").1 as i32
}

#[tokio::test]
async fn endpoint_switches_a_pooled_prepared_statement_app_with_no_failed_request() {
    let w = world().await;
    let (fleet, url) = w.fleet(2).await;
    let ids = fleet.ids();
    let app = PooledApp::start(&url, 6, 50, 100).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(app.served() > 100, "the app serves through the endpoint");

    let t0 = std::time::Instant::now();
    let paused = w.set(true, Backend::Source, 2000).await;
    for t in w.answers(&ids, &paused).await {
        assert!(t.reached(&paused), "pause: {t:?}");
        assert!(
            t.pgbouncer_version.contains("1.2"),
            "{}",
            t.pgbouncer_version
        );
    }
    let moved = w.set(true, Backend::Target, 2000).await;
    for t in w.answers(&ids, &moved).await {
        assert!(t.reached(&moved), "retarget: {t:?}");
    }
    let resumed = w.set(false, Backend::Target, 2000).await;
    for t in w.answers(&ids, &resumed).await {
        assert!(t.reached(&resumed), "resume: {t:?}");
    }
    let window = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    app.stop().await;

    let failures = app.failures();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    let source_port = port_of(&w.db.source_app_url());
    let target_port = port_of(&w.db.url(ferry_tests::Side::Target));
    let writes = app.acked_writes();
    let on_source = writes.iter().filter(|(_, p)| *p == source_port).count();
    let on_target = writes.iter().filter(|(_, p)| *p == target_port).count();
    assert!(
        on_source > 20 && on_target > 20,
        "source {on_source}, target {on_target}"
    );
    // After the switch every write lands on the target; none on the source.
    let last_source = writes.iter().rposition(|(_, p)| *p == source_port);
    let first_target = writes.iter().position(|(_, p)| *p == target_port);
    assert!(
        last_source < first_target,
        "no write went back to the source"
    );
    // Every acknowledged write is where the app was told it went.
    for (side, port) in [
        (w.db.source_app_url(), source_port),
        (w.db.url(ferry_tests::Side::Target), target_port),
    ] {
        let ids: Vec<i64> = writes
            .iter()
            .filter(|(_, p)| *p == port)
            .map(|(i, _)| *i)
            .collect();
        let found: i64 = side
            .connect()
            .await
            .expect("connect")
            .query_one("SELECT count(*) FROM orders WHERE id = ANY($1)", &[&ids])
            .await
            .expect("count")
            .get(0);
        assert_eq!(found, ids.len() as i64);
    }
    assert!(
        window < Duration::from_secs(5),
        "pause → retarget → resume took {window:?}"
    );
    // The app never reconnected: its pool outlived the switch.
    assert_eq!(app.connects(), 6);
}

#[tokio::test]
async fn a_transaction_holding_the_pause_past_its_bound_resumes_on_the_source() {
    let w = world().await;
    let (fleet, url) = w.fleet(1).await;
    let ids = fleet.ids();
    let app = PooledApp::start(&url, 3, 20, 20).await;
    // A transaction open through the endpoint (a long report, a stuck job).
    let holder = PgUrl::parse(&url)
        .expect("url")
        .connect_as_app()
        .await
        .expect("connect");
    holder
        .batch_execute("BEGIN; SELECT count(*) FROM orders")
        .await
        .expect("begin");
    let want = w.set(true, Backend::Source, 300).await;
    let answered = w.answers(&ids, &want).await;
    let t = &answered[0];
    let error = t.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("pause timed out after 300 ms") && error.contains("1 server connection"),
        "{t:?}"
    );
    assert!(!t.paused && t.backend == Backend::Source, "{t:?}");
    holder.batch_execute("COMMIT").await.expect("commit");
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.stop().await;
    assert!(app.failures().is_empty(), "{:?}", app.failures());
    // A later attempt with nothing holding it succeeds.
    let again = w.set(true, Backend::Source, 2000).await;
    assert!(w.answers(&ids, &again).await[0].reached(&again));
}

#[tokio::test]
async fn a_backend_that_refuses_the_login_leaves_the_endpoint_where_it_was() {
    let w = world().await;
    let wrong = with_password(
        w.db.url(ferry_tests::Side::Target).expose_secret(),
        "not-the-password",
    );
    w.params
        .put_secure(&w.p.target_param, &wrong)
        .await
        .expect("param");
    let (fleet, url) = w.fleet(1).await;
    let ids = fleet.ids();
    let app = PooledApp::start(&url, 3, 20, 20).await;
    let want = w.set(true, Backend::Target, 2000).await;
    let t = &w.answers(&ids, &want).await[0];
    let error = t.error.as_deref().unwrap_or_default();
    assert!(error.contains("target database refused"), "{t:?}");
    assert!(!error.contains("not-the-password"), "{error}");
    // Still on the source, still paused: the control plane resumes it once the source takes
    // writes again (the cutover unfreezes it first).
    assert!(t.paused && t.backend == Backend::Source, "{t:?}");
    let back = w.set(false, Backend::Source, 2000).await;
    assert!(w.answers(&ids, &back).await[0].reached(&back));
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.stop().await;
    assert!(app.failures().is_empty(), "{:?}", app.failures());
    let source_port = port_of(&w.db.source_app_url());
    assert!(app.acked_writes().iter().all(|(_, p)| *p == source_port));
}

/// The source's URL changes while the endpoint is paused (Heroku rotates credentials): the
/// task applies it once it serves again, not never.
#[tokio::test]
async fn a_credential_change_while_paused_is_applied_after_the_resume() {
    let w = world().await;
    let (fleet, _url) = w.fleet(1).await;
    let ids = fleet.ids();
    let ini = std::path::PathBuf::from(ferry_tests::bed_var("FERRY_BED_DIR"))
        .join("endpoints")
        .join(&ids[0])
        .join("pgbouncer.ini");
    let read_ini = || std::fs::read_to_string(&ini).expect("read the task's ini");
    assert!(read_ini().contains("server_tls_sslmode = verify-full"));
    let paused = w.set(true, Backend::Source, 2000).await;
    assert!(w.answers(&ids, &paused).await[0].reached(&paused));
    // The same server, now with sslmode=require (a change the ini must carry).
    let changed =
        w.db.source_app_url()
            .expose_secret()
            .split('?')
            .next()
            .expect("url")
            .to_string()
            + "?sslmode=require";
    w.params
        .put_secure(&w.p.source_param, &changed)
        .await
        .expect("param");
    // Tasks read their parameters every second here; paused, nothing is rewritten.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(read_ini().contains("server_tls_sslmode = verify-full"));
    let resumed = w.set(false, Backend::Source, 2000).await;
    assert!(w.answers(&ids, &resumed).await[0].reached(&resumed));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        read_ini().contains("server_tls_sslmode = require"),
        "the change was applied once the task served again"
    );
}

/// With a Redis proxy beside PgBouncer, one desired state switches both: a Redis client that
/// holds its connection (a writer and a worker blocked in BRPOP) sees no error, its writes
/// after the resume land on the other Redis, and each task reports its proxy. Database 13
/// of the bed's Redis servers is this test's.
#[tokio::test]
async fn the_redis_proxy_pauses_and_switches_with_pgbouncer_and_a_held_client_sees_no_error() {
    use ferry_kv::{Conn, RedisUrl, cmd, resp::Value};
    let mut w = world().await;
    let bed = |var: &str| {
        RedisUrl::parse(&ferry_tests::bed_var(var))
            .expect("url")
            .with_db(13)
    };
    let prefix = w.p.source_param.trim_end_matches("/source-url").to_string();
    let redis = (
        format!("{prefix}/redis-source-url"),
        format!("{prefix}/redis-target-url"),
        format!("{prefix}/redis-endpoint-url"),
    );
    for (param, var) in [
        (&redis.0, "FERRY_BED_REDIS_SOURCE_URL"),
        (&redis.1, "FERRY_BED_REDIS_TARGET_URL"),
    ] {
        let url = ferry_tests::bed_var(var);
        w.params.put_secure(param, &url).await.expect("param");
    }
    w.p.redis = Some(redis.clone());
    let redis_nlb = ferry_tests::endpoint::Nlb::start().await;
    let client_url = format!(
        "rediss://:{}@127.0.0.1:{}/13?ssl_cert_reqs=none",
        unique("redis-client-secret-"),
        redis_nlb.port
    );
    w.params
        .put_secure(&redis.2, &client_url)
        .await
        .expect("param");
    let nlb = ferry_tests::endpoint::Nlb::start().await;
    let url = w.client_url.replace("{port}", &nlb.port.to_string());
    w.params
        .put_secure(&w.p.client_param, &url)
        .await
        .expect("param");
    let fleet = EndpointFleet::start_with_redis(w.p.clone(), 2, nlb, Some(redis_nlb)).await;
    let ids = fleet.ids();

    let p = unique("epr-");
    let app_url = RedisUrl::parse(&client_url).expect("client url");
    let mut writer = Conn::connect(&app_url).await.expect("through the proxy");
    let mut worker = Conn::connect(&app_url).await.expect("through the proxy");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (s1, e1, k) = (stop.clone(), errors.clone(), p.clone());
    let writing = tokio::spawn(async move {
        let mut i = 0u64;
        while !s1.load(std::sync::atomic::Ordering::SeqCst) {
            if let Err(e) = writer.call(cmd!["SET", format!("{k}:{i}"), "v"]).await {
                e1.lock().expect("errors").push(e.to_string());
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        i - 1
    });
    let (s2, e2, q) = (stop.clone(), errors.clone(), format!("{p}:queue"));
    let popping = tokio::spawn(async move {
        while !s2.load(std::sync::atomic::Ordering::SeqCst) {
            if let Err(e) = worker.call(cmd!["BRPOP", &q, "2"]).await {
                e2.lock().expect("errors").push(e.to_string());
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (paused, backend) in [
        (true, Backend::Source),
        (true, Backend::Target),
        (false, Backend::Target),
    ] {
        let want = w.set(paused, backend, 3_000).await;
        for t in w.answers(&ids, &want).await {
            assert!(t.reached(&want), "{t:?}");
            let r = t.redis.as_ref().expect("a Redis proxy report");
            assert_eq!((r.paused, r.backend), (paused, backend), "{t:?}");
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let last = writing.await.expect("writer");
    popping.await.expect("worker");
    assert!(
        errors.lock().expect("errors").is_empty(),
        "{:?}",
        errors.lock().expect("errors")
    );
    let mut target = Conn::connect(&bed("FERRY_BED_REDIS_TARGET_URL"))
        .await
        .expect("target");
    let mut source = Conn::connect(&bed("FERRY_BED_REDIS_SOURCE_URL"))
        .await
        .expect("source");
    let key = format!("{p}:{last}");
    assert_eq!(
        target.call(cmd!["EXISTS", &key]).await.expect("exists"),
        Value::Int(1)
    );
    assert_eq!(
        source.call(cmd!["EXISTS", &key]).await.expect("exists"),
        Value::Int(0)
    );
    assert_eq!(
        source
            .call(cmd!["EXISTS", format!("{p}:0")])
            .await
            .expect("exists"),
        Value::Int(1)
    );
    drop(fleet);
}

/// An app connection left idle longer than the balancer keeps an idle flow still serves its
/// next request. The bed's balancer drops a flow on which no packet passed for its idle
/// timeout, as an NLB does at 350 s, counting keepalive probes as packets; PgBouncer probes its
/// client connections after `tcp_keepidle` (60 s), so the flow stays. The app itself sends no
/// probe (`keepalives=0`, as a driver at its defaults, which waits two hours). The same rule in
/// front of a server that sends none drops the flow, and the next query fails: the rule bites.
#[tokio::test]
async fn an_app_connection_idle_past_the_balancers_idle_timeout_serves_its_next_request() {
    let w = world().await;
    // Past PgBouncer's tcp_keepidle (60 s), as the NLB's 350 s is.
    let idle = Duration::from_secs(75);
    let nlb = ferry_tests::endpoint::Nlb::start_with_idle_timeout(idle).await;
    let url = w.client_url.replace("{port}", &nlb.port.to_string());
    w.params
        .put_secure(&w.p.client_param, &url)
        .await
        .expect("param");
    let drops = nlb.idle_drops.clone();
    let _fleet = EndpointFleet::start_behind(w.p.clone(), 1, nlb).await;
    w.set(false, Backend::Source, 2000).await;
    let quiet_app = |url: String| async move {
        let sep = if url.contains('?') { '&' } else { '?' };
        ferry_pg::PgUrl::parse(&format!("{url}{sep}keepalives=0"))
            .expect("url")
            .connect_as_app()
            .await
            .expect("the app connects")
    };
    let app = quiet_app(url.clone()).await;
    app.query_one("SELECT count(*) FROM orders", &[])
        .await
        .expect("first request");

    // The rule itself: a 2-s balancer straight in front of PostgreSQL, whose server probes
    // after the OS's two hours, forgets the flow, and the next query on it fails.
    let direct = ferry_tests::endpoint::Nlb::start_with_idle_timeout(Duration::from_secs(2)).await;
    let source = w.db.source_app_url();
    let (host, port) = source.host_port().expect("host and port");
    direct.set_targets(vec![port]);
    let via = source.expose_secret().replace(
        &format!("{host}:{port}"),
        &format!("127.0.0.1:{}", direct.port),
    );
    let exposed = quiet_app(via).await;
    exposed.query_one("SELECT 1", &[]).await.expect("served");
    let dropped = std::time::Instant::now();
    while direct.idle_drops.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(dropped.elapsed() < Duration::from_secs(60), "never dropped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        exposed.query_one("SELECT 1", &[]).await.is_err(),
        "a flow the balancer forgot cannot serve"
    );

    tokio::time::sleep(idle + Duration::from_secs(15)).await;
    app.query_one("SELECT count(*) FROM orders", &[])
        .await
        .expect("the request after a long idle is served");
    assert_eq!(
        drops.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "PgBouncer's keepalives kept the flow"
    );
}

/// Preflight asks the endpoint a query through the URL the fleet will use: answered through
/// the balancer with the client login, a blocker naming the parameter (and no password) with a
/// wrong one or with no endpoint behind the address.
#[tokio::test]
async fn preflight_asks_the_endpoint_a_query_as_the_app_will() {
    let w = world().await;
    let (_fleet, url) = w.fleet(1).await;
    let good = PgUrl::parse(&url).expect("url");
    assert_eq!(
        ferry_steps::preflight::endpoint_blocker(&good, "/p/endpoint-url").await,
        None
    );
    let wrong = url.replace("endpoint-client-secret-", "not-the-secret-");
    let blocker = ferry_steps::preflight::endpoint_blocker(
        &PgUrl::parse(&wrong).expect("url"),
        "/p/endpoint-url",
    )
    .await
    .expect("a wrong client password is a blocker");
    assert!(blocker.contains("/p/endpoint-url"), "{blocker}");
    assert!(!blocker.contains("not-the-secret-"), "{blocker}");
    let nobody = ferry_tests::endpoint::Nlb::start().await;
    let gone = url.replace(
        &format!(":{}/", good.host_port().expect("port").1),
        &format!(":{}/", nobody.port),
    );
    assert!(
        ferry_steps::preflight::endpoint_blocker(&PgUrl::parse(&gone).expect("url"), "/p/e")
            .await
            .is_some(),
        "no endpoint behind the balancer"
    );
}

/// A rotated client password (the endpoint URL's parameter rewritten) is taken at the next
/// refresh without a restart: new logins with it are served, the old one is refused, and a
/// connection logged in before keeps working.
#[tokio::test]
async fn a_rotated_client_password_is_taken_without_a_restart() {
    let w = world().await;
    let (_fleet, url) = w.fleet(1).await;
    let before = PgUrl::parse(&url)
        .expect("url")
        .connect_as_app()
        .await
        .expect("the old password, before the rotation");
    let rotated = url.replace("endpoint-client-secret-", "rotated-client-secret-");
    assert_ne!(rotated, url);
    w.params
        .put_secure(&w.p.client_param, &rotated)
        .await
        .expect("param");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if PgUrl::parse(&rotated)
            .expect("url")
            .connect_as_app()
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rotated password was never accepted"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        PgUrl::parse(&url)
            .expect("url")
            .connect_as_app()
            .await
            .is_err(),
        "the old password is refused after the rotation"
    );
    before
        .query_one("SELECT 1", &[])
        .await
        .expect("a connection logged in before goes on");
}

/// Sends one control request line to `addr` and reads the answer.
async fn tell(addr: &str, line: &str) -> ferry_core::control::ControlReply {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the control port");
    s.write_all(line.as_bytes()).await.expect("write");
    let mut out = String::new();
    tokio::io::BufReader::new(s)
        .read_line(&mut out)
        .await
        .expect("read");
    serde_json::from_str(&out).expect("a control reply")
}

/// A task that reads the table only once a minute is switched through its control channel at
/// once, with a pooled app's queries held, not failed; a request signed with another key, or
/// for another app, moves nothing; the task's report in the table follows its answers.
#[tokio::test]
async fn the_control_channel_switches_a_task_the_table_would_reach_a_minute_later() {
    use ferry_core::control::{ControlReply, request_line};
    let mut w = world().await;
    let key = w.control_key(ferry_tests::endpoint::Control::Mixed).await;
    let (fleet, url) = w.fleet(1).await;
    let ids = fleet.ids();
    let first = w.answers(&ids, &EndpointDesired::initial(&w.p.app)).await;
    let addr = first[0]
        .control
        .clone()
        .expect("the task advertises its control port");
    let app = PooledApp::start(&url, 3, 20, 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut want = w.set(true, Backend::Source, 2000).await;
    let now = Utc::now().timestamp();
    let forged = request_line(b"another-key-0123456789-0123456789", &want, now);
    assert!(
        matches!(tell(&addr, &forged).await, ControlReply::Refused(r) if r.contains("does not match"))
    );
    let other_app = EndpointDesired {
        app: "another-app".into(),
        ..want.clone()
    };
    let line = request_line(key.as_bytes(), &other_app, now);
    assert!(
        matches!(tell(&addr, &line).await, ControlReply::Refused(r) if r.contains("another-app"))
    );

    // Pause, retarget, resume: each answered by the channel with the state reached.
    for (paused, backend) in [
        (true, Backend::Source),
        (true, Backend::Target),
        (false, Backend::Target),
    ] {
        if paused != want.paused || backend != want.backend {
            want = w.set(paused, backend, 2000).await;
        }
        let line = request_line(key.as_bytes(), &want, Utc::now().timestamp());
        match tell(&addr, &line).await {
            ControlReply::Report(r) => assert!(r.reached(&want), "{want:?} → {r:?}"),
            ControlReply::Refused(r) => panic!("refused: {r}"),
        }
        // The same request again (a replay) changes nothing and answers the same.
        match tell(&addr, &line).await {
            ControlReply::Report(r) => assert!(r.reached(&want), "replayed: {r:?}"),
            ControlReply::Refused(r) => panic!("refused: {r}"),
        }
    }
    assert!(
        w.answers(&ids, &want).await[0].reached(&want),
        "the table's report follows"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.stop().await;
    assert!(app.failures().is_empty(), "{:?}", app.failures());
    let target_port = port_of(&w.db.url(ferry_tests::Side::Target));
    assert!(
        app.acked_writes().iter().any(|(_, p)| *p == target_port),
        "writes reached the target through the switched endpoint"
    );
}

/// A state told over the control channel whose write never landed (a control plane stopped
/// between the two) does not hide the next state stored: the task acts on the told one, then
/// on the stored one, numbered above it, which it reads from the table.
#[tokio::test]
async fn a_state_told_but_never_stored_does_not_hide_the_next_one() {
    use ferry_core::control::{ControlReply, request_line};
    let mut w = world().await;
    let key = w.control_key(ferry_tests::endpoint::Control::On).await;
    let (fleet, _url) = w.fleet(1).await;
    let ids = fleet.ids();
    let stored = w.set(false, Backend::Source, 2000).await;
    let first = w.answers(&ids, &stored).await;
    let addr = first[0]
        .control
        .clone()
        .expect("the task advertises its control port");
    // Told, never stored: the number a control plane would have written next.
    let told = EndpointDesired {
        seq: stored.seq + 1,
        paused: true,
        issued_at: Utc::now(),
        ..stored.clone()
    };
    let line = request_line(key.as_bytes(), &told, Utc::now().timestamp());
    match tell(&addr, &line).await {
        ControlReply::Report(r) => assert!(r.reached(&told), "{r:?}"),
        ControlReply::Refused(r) => panic!("refused: {r}"),
    }
    // The next state, stored first: the task reads it from the table and resumes.
    let next = w.set(false, Backend::Source, 2000).await;
    assert!(
        next.seq > told.seq,
        "{} after a told {}",
        next.seq,
        told.seq
    );
    let reports = w.answers(&ids, &next).await;
    assert!(reports[0].reached(&next), "{:?}", reports[0]);
}
