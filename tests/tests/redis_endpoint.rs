//! The Redis endpoint's proxy on the bed's two real Redis servers: clients that hold their
//! connections (a writer, a MULTI user, a worker blocked in BRPOP, each on its own database
//! and name) go on through a pause → retarget → resume without one error, and their next
//! commands land on the new server; logins, refused commands, pub/sub and RESP3 behave as a
//! client of Redis expects.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::SeqCst},
    },
    time::{Duration, Instant},
};

use ferry_core::secret::Secret;
use ferry_kv::{Conn, RedisUrl, cmd, proxy::Proxy, resp::Value};
use ferry_tests::{bed_var, unique};

const PASSWORD: &str = "app-fleet-secret";

fn bed_url(var: &str) -> RedisUrl {
    RedisUrl::parse(&bed_var(var)).expect("bed URL")
}

/// A proxy on the bed's source Redis, listening with the bed's certificate; its URL for
/// clients (database `db`).
async fn proxy() -> (Proxy, String) {
    let certs = PathBuf::from(bed_var("FERRY_BED_DIR")).join("certs");
    let tls = ferry_kv::proxy::tls_acceptor(&certs.join("server.crt"), &certs.join("server.key"))
        .expect("tls");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let p = Proxy::new(
        bed_url("FERRY_BED_REDIS_SOURCE_URL"),
        None,
        Secret::new(PASSWORD),
        100,
    );
    p.serve(listener, Some(tls));
    let url = format!(
        "rediss://:{PASSWORD}@127.0.0.1:{port}/DB?sslrootcert={}",
        bed_var("FERRY_BED_CA")
    );
    (p, url)
}

/// Whether `key` exists in database 0 of the bed's source Redis, read directly.
async fn on_source(key: &str) -> bool {
    let mut direct = Conn::connect(&bed_url("FERRY_BED_REDIS_SOURCE_URL").with_db(0))
        .await
        .expect("direct");
    direct.call(cmd!["EXISTS", key]).await.expect("exists") == Value::Int(1)
}

/// The proxy's URL with no password (database 0): a client that has not logged in.
fn anonymous(url: &str) -> RedisUrl {
    RedisUrl::parse(
        &url.replace(&format!(":{PASSWORD}@"), "")
            .replace("/DB", "/0"),
    )
    .expect("url")
}

async fn client(url: &str, db: u32, name: &str) -> Conn {
    let mut c =
        Conn::connect(&RedisUrl::parse(&url.replace("/DB", &format!("/{db}"))).expect("url"))
            .await
            .expect("connect through the proxy");
    c.call(cmd!["CLIENT", "SETNAME", name]).await.expect("name");
    c
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    errors: AtomicU64,
    slowest_ms: AtomicU64,
}

impl Tally {
    fn note(&self, started: Instant, ok: bool) {
        if ok {
            self.ok.fetch_add(1, SeqCst);
        } else {
            self.errors.fetch_add(1, SeqCst);
        }
        self.slowest_ms
            .fetch_max(started.elapsed().as_millis() as u64, SeqCst);
    }
}

#[tokio::test]
async fn held_sessions_go_on_through_the_switch_without_an_error_on_their_database_and_name() {
    let (proxy, url) = proxy().await;
    let p = unique("rp-");
    let stop = Arc::new(AtomicBool::new(false));
    let (writes, txs, pops) = (
        Arc::new(Tally::default()),
        Arc::new(Tally::default()),
        Arc::new(Tally::default()),
    );
    let last_write = Arc::new(AtomicU64::new(0));

    let mut writer = client(&url, 3, "app-writer").await;
    let mut tx = client(&url, 3, "app-tx").await;
    let mut worker = client(&url, 4, "app-worker").await;
    let tasks = vec![
        {
            let (stop, t, p, last) = (stop.clone(), writes.clone(), p.clone(), last_write.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(SeqCst) {
                    let started = Instant::now();
                    let ok = writer
                        .pipeline(vec![
                            cmd!["SET", format!("{p}:k:{i}"), i.to_string()],
                            cmd!["INCR", format!("{p}:counter")],
                        ])
                        .await
                        .is_ok_and(|a| !a.iter().any(|v| matches!(v, Value::Error(_))));
                    t.note(started, ok);
                    last.store(i, SeqCst);
                    i += 1;
                }
            })
        },
        {
            let (stop, t, p) = (stop.clone(), txs.clone(), p.clone());
            tokio::spawn(async move {
                while !stop.load(SeqCst) {
                    let started = Instant::now();
                    let ok = tx
                        .pipeline(vec![
                            cmd!["WATCH", format!("{p}:tx")],
                            cmd!["MULTI"],
                            cmd!["INCR", format!("{p}:tx")],
                            cmd!["EXPIRE", format!("{p}:tx"), "600"],
                            cmd!["EXEC"],
                        ])
                        .await
                        .is_ok_and(|a| matches!(a.last(), Some(Value::Array(Some(_)))));
                    t.note(started, ok);
                }
            })
        },
        {
            let (stop, t, p) = (stop.clone(), pops.clone(), p.clone());
            tokio::spawn(async move {
                while !stop.load(SeqCst) {
                    let started = Instant::now();
                    // Blocks 5 s unless released: the pause must not wait for it.
                    let ok = worker
                        .call(cmd!["BRPOP", format!("{p}:jobs"), "5"])
                        .await
                        .is_ok();
                    t.note(started, ok);
                }
            })
        },
    ];
    tokio::time::sleep(Duration::from_millis(400)).await;

    let paused = proxy.pause(Duration::from_secs(4)).await.expect("pause");
    assert!(
        paused.unblocked >= 1,
        "the BRPOP was not released: {paused:?}"
    );
    let before = last_write.load(SeqCst);
    proxy
        .retarget(bed_url("FERRY_BED_REDIS_TARGET_URL"))
        .await
        .expect("retarget");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        last_write.load(SeqCst),
        before,
        "a write went through while paused"
    );
    proxy.resume();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut t3_early = Conn::connect(&bed_url("FERRY_BED_REDIS_TARGET_URL").with_db(3))
        .await
        .expect("target db 3");
    // The sessions kept their names on the new server.
    let Value::Bulk(Some(list)) = t3_early.call(cmd!["CLIENT", "LIST"]).await.expect("list") else {
        panic!("CLIENT LIST");
    };
    let list = String::from_utf8_lossy(&list);
    assert!(
        list.lines()
            .any(|l| l.contains("name=app-writer") && l.contains("db=3")),
        "{list}"
    );
    stop.store(true, SeqCst);
    // The worker's last BRPOP ends with its 5 s timeout.
    let mut source = Conn::connect(&bed_url("FERRY_BED_REDIS_SOURCE_URL").with_db(4))
        .await
        .expect("source");
    source
        .call(cmd!["LPUSH", format!("{p}:jobs"), "wake"])
        .await
        .expect("wake");
    let mut target = Conn::connect(&bed_url("FERRY_BED_REDIS_TARGET_URL").with_db(4))
        .await
        .expect("target");
    target
        .call(cmd!["LPUSH", format!("{p}:jobs"), "wake"])
        .await
        .expect("wake");
    for t in tasks {
        t.await.expect("client task");
    }

    for (what, t) in [("writer", &writes), ("MULTI", &txs), ("BRPOP", &pops)] {
        assert_eq!(t.errors.load(SeqCst), 0, "{what} saw errors");
        assert!(t.ok.load(SeqCst) > 0, "{what} did nothing");
    }
    assert!(
        writes.slowest_ms.load(SeqCst) >= 250,
        "the writer was never held"
    );
    // Writes after the switch are on the target, in database 3; the ones before on the source.
    let last = last_write.load(SeqCst);
    assert!(last > before + 1, "no write after the resume");
    let mut t3 = Conn::connect(&bed_url("FERRY_BED_REDIS_TARGET_URL").with_db(3))
        .await
        .expect("target db 3");
    let mut s3 = Conn::connect(&bed_url("FERRY_BED_REDIS_SOURCE_URL").with_db(3))
        .await
        .expect("source db 3");
    let key = format!("{p}:k:{last}");
    assert_eq!(
        t3.call(cmd!["EXISTS", &key]).await.expect("exists"),
        Value::Int(1)
    );
    assert_eq!(
        s3.call(cmd!["EXISTS", &key]).await.expect("exists"),
        Value::Int(0)
    );
    assert_eq!(
        s3.call(cmd!["EXISTS", format!("{p}:k:0")])
            .await
            .expect("exists"),
        Value::Int(1)
    );
}

#[tokio::test]
async fn logins_and_commands_the_endpoint_cannot_carry_are_refused_as_redis_would() {
    let (_proxy, url) = proxy().await;
    let wrong = url.replace(PASSWORD, "not-it").replace("/DB", "/0");
    let err = Conn::connect(&RedisUrl::parse(&wrong).expect("url"))
        .await
        .expect_err("a wrong password")
        .to_string();
    assert!(err.contains("WRONGPASS"), "{err}");
    assert!(!err.contains("not-it"), "{err}");
    let mut c = Conn::connect(&anonymous(&url)).await.expect("connect");
    let err = c
        .call(cmd!["GET", "x"])
        .await
        .expect_err("no AUTH")
        .to_string();
    assert!(err.contains("NOAUTH"), "{err}");
    let mut c = client(&url, 0, "app").await;
    let err = c
        .call(cmd!["CLIENT", "TRACKING", "on"])
        .await
        .expect_err("tracking")
        .to_string();
    assert!(
        err.contains("not supported through the Ferry endpoint"),
        "{err}"
    );
    // An error of the server passes through as it is.
    let err = c
        .call(cmd!["INCR", unique("rp-")])
        .await
        .map(|_| ())
        .and(c.call(cmd!["NOSUCHCOMMAND"]).await.map(|_| ()))
        .expect_err("unknown command")
        .to_string();
    assert!(err.contains("unknown command"), "{err}");
}

#[tokio::test]
async fn a_subscriber_is_closed_at_the_switch_and_resp3_clients_pass_through() {
    let (proxy, url) = proxy().await;
    let mut sub = client(&url, 0, "app-sub").await;
    sub.send(cmd!["SUBSCRIBE", "ferry-test-channel"])
        .await
        .expect("subscribe");
    let confirm = sub
        .receive(Duration::from_secs(5))
        .await
        .expect("confirmation");
    assert!(
        matches!(confirm, Some(Value::Array(Some(_)))),
        "{confirm:?}"
    );
    proxy.pause(Duration::from_secs(2)).await.expect("pause");
    proxy
        .retarget(bed_url("FERRY_BED_REDIS_TARGET_URL"))
        .await
        .expect("retarget");
    proxy.resume();
    assert!(
        sub.receive(Duration::from_secs(5)).await.is_err(),
        "the subscriber stayed on the old server"
    );
    assert_eq!(proxy.closed_by_switch(), 1);

    // redis-cli speaking RESP3 (HELLO 3): a hash comes back as a map, through the proxy.
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .expect("port")
        .to_string();
    let key = unique("rp3-");
    let out = tokio::task::spawn_blocking(move || {
        let cli = |args: &[&str]| {
            std::process::Command::new("redis-cli")
                .args(["-3", "--tls", "--cacert", &bed_var("FERRY_BED_CA")])
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "--no-auth-warning",
                    "-a",
                    PASSWORD,
                    "--no-raw",
                ])
                .args(args)
                .output()
                .expect("redis-cli")
        };
        cli(&["HSET", &key, "a", "1"]);
        cli(&["HGETALL", &key])
    })
    .await
    .expect("cli");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("1# \"a\" => \"1\""),
        "not a RESP3 map: {text}"
    );
}

/// What the app must not do to the migration's servers through the proxy is refused with the
/// reason, nothing of it reaches the server, and the session goes on.
#[tokio::test]
async fn administrative_commands_and_ferrys_keys_are_refused_and_the_session_goes_on() {
    let (_proxy, url) = proxy().await;
    let mut c = client(&url, 0, "app").await;
    let marker = format!("ferry:drain:{}", unique("x"));
    for command in [
        cmd!["FLUSHDB"],
        cmd!["FLUSHALL"],
        cmd!["SWAPDB", "0", "1"],
        cmd!["CLIENT", "PAUSE", "100"],
        cmd!["CLIENT", "KILL", "TYPE", "normal"],
        cmd!["SCRIPT", "FLUSH"],
        cmd!["CONFIG", "SET", "notify-keyspace-events", ""],
        cmd!["RESET"],
        cmd!["SET", marker.as_str(), "1"],
    ] {
        let shown = String::from_utf8_lossy(&command[0]).into_owned();
        let e = c.call(command).await.expect_err("refused").to_string();
        assert!(
            e.contains("is refused through the Ferry endpoint"),
            "{shown}: {e}"
        );
    }
    assert!(
        !on_source(&marker).await,
        "the refused SET never reached the server"
    );
    assert_eq!(
        c.call(cmd!["PING"]).await.expect("the session goes on"),
        Value::Simple("PONG".into())
    );
}

/// Before it logs in, a client is held to Redis's own limits: a header of endless digits, an
/// argument count of a hundred million or an argument past 16 KiB ends the connection at once
/// with a protocol error (the proxy buffers at most 1 MB for it), and a connection that never
/// logs in is closed after the login deadline (10 s), so idle connections cannot hold the
/// session slots.
#[tokio::test]
async fn a_client_that_has_not_logged_in_is_held_to_redis_limits() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (proxy, url) = proxy().await;
    let anonymous = anonymous(&url);
    let open = || async {
        Conn::connect(&anonymous)
            .await
            .expect("connect")
            .into_parts()
            .0
    };
    for (what, first) in [
        ("endless digits", b"*".to_vec()),
        ("a hundred million arguments", b"*100000000\r\n".to_vec()),
        ("an argument past 16 KiB", b"*2\r\n$100000\r\n".to_vec()),
    ] {
        let mut io = open().await;
        let mut sent = 0usize;
        io.write_all(&first).await.expect("write");
        let chunk = vec![b'9'; 64 * 1024];
        // Keep sending (at most 100 MB) until the proxy closes the connection.
        while sent < 100 * 1024 * 1024 {
            if io.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len();
            if sent.is_multiple_of(4 * 1024 * 1024) {
                let mut peek = [0u8; 256];
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(1), io.read(&mut peek)).await
                    && n > 0
                {
                    assert!(
                        String::from_utf8_lossy(&peek[..n]).contains("Protocol error"),
                        "{what}: {:?}",
                        String::from_utf8_lossy(&peek[..n])
                    );
                    break;
                }
            }
        }
        assert!(
            sent < 16 * 1024 * 1024,
            "{what}: the proxy took {sent} bytes before closing"
        );
    }
    // Idle: closed at the login deadline; a logged-in client keeps working meanwhile.
    let mut idle = open().await;
    let mut app = client(&url, 0, "app").await;
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(60), idle.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "an idle unauthenticated connection is closed: {closed:?}"
    );
    assert_eq!(
        app.call(cmd!["PING"]).await.expect("a logged-in client"),
        Value::Simple("PONG".into())
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.sessions() > 1 {
        assert!(
            Instant::now() < deadline,
            "{} sessions still held",
            proxy.sessions()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `UNSUBSCRIBE a b` on a connection that subscribed to nothing gets two answers from Redis;
/// through the proxy too, and every later command still gets its own answer (the proxy
/// answers it itself, as Redis would, instead of counting one answer for it).
#[tokio::test]
async fn unsubscribe_outside_pub_sub_keeps_every_answer_with_its_command() {
    let (_proxy, url) = proxy().await;
    let key = unique("us-");
    for (side, mut c) in [
        (
            "redis",
            Conn::connect(&bed_url("FERRY_BED_REDIS_SOURCE_URL"))
                .await
                .expect("direct"),
        ),
        ("proxy", client(&url, 0, "app").await),
    ] {
        c.send(cmd!["UNSUBSCRIBE", "a", "b"]).await.expect("send");
        for channel in ["a", "b"] {
            let answer = c
                .receive(Duration::from_secs(5))
                .await
                .expect("answer")
                .expect("an answer per channel");
            assert_eq!(
                answer,
                Value::Array(Some(vec![
                    Value::Bulk(Some(b"unsubscribe".to_vec())),
                    Value::Bulk(Some(channel.as_bytes().to_vec())),
                    Value::Int(0),
                ])),
                "{side}"
            );
        }
        assert_eq!(
            c.call(cmd!["SET", key.as_str(), side]).await.expect("set"),
            Value::Simple("OK".into()),
            "{side}"
        );
        assert_eq!(
            c.call(cmd!["GET", key.as_str()]).await.expect("get"),
            Value::Bulk(Some(side.as_bytes().to_vec())),
            "{side}"
        );
    }
}

/// A SELECT inside a discarded MULTI never ran: after a switch the session reopens on the
/// database it was really on.
#[tokio::test]
async fn a_select_in_a_discarded_transaction_is_not_carried_across_a_switch() {
    let (proxy, url) = proxy().await;
    let mut c = client(&url, 0, "app").await;
    assert_eq!(
        c.pipeline(vec![cmd!["MULTI"], cmd!["SELECT", "2"], cmd!["DISCARD"]])
            .await
            .expect("discarded")
            .len(),
        3
    );
    proxy.pause(Duration::from_secs(2)).await.expect("pause");
    proxy
        .retarget(bed_url("FERRY_BED_REDIS_SOURCE_URL"))
        .await
        .expect("retarget");
    proxy.resume();
    let key = unique("sel-");
    c.call(cmd!["SET", key.as_str(), "1"]).await.expect("set");
    assert!(
        on_source(&key).await,
        "the write landed in database 0, where the client is"
    );
}

/// A subscribed client is closed as soon as a pause begins: a RESP3 client may write while
/// subscribed, and that write must not reach the old server once the switch has started.
#[tokio::test]
async fn a_subscribed_client_cannot_write_once_a_pause_begins() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (proxy, url) = proxy().await;
    let (mut io, _) = client(&url, 0, "app-sub").await.into_parts();
    // RESP3, subscribed (the bytes as a RESP3 client sends them).
    io.write_all(
        b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*2\r\n$9\r\nSUBSCRIBE\r\n$18\r\nferry-test-channel\r\n",
    )
    .await
    .expect("subscribe");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("ferry-test-channel") {
        let n = tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf))
            .await
            .expect("the confirmation in time")
            .expect("read");
        assert!(n > 0, "closed before the confirmation");
        seen.extend_from_slice(&buf[..n]);
    }
    proxy.pause(Duration::from_secs(2)).await.expect("pause");
    let key = unique("sub-");
    // The write may leave the client; it must not arrive.
    let set = format!(
        "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$5\r\nlost?\r\n",
        key.len()
    );
    let _ = io.write_all(set.as_bytes()).await;
    let _ = tokio::time::timeout(Duration::from_millis(500), io.read(&mut buf)).await;
    proxy.resume();
    assert!(
        !on_source(&key).await,
        "a write sent during the pause reached the old server"
    );
    assert!(proxy.closed_by_switch() >= 1);
}

/// Refused logins slow a connection down and, at the fifth, close it; a client with the right
/// password is not slowed.
#[tokio::test]
async fn a_connection_guessing_the_password_is_closed_after_five_tries() {
    let (_proxy, url) = proxy().await;
    let mut c = Conn::connect(&anonymous(&url)).await.expect("connect");
    for n in 1..=5 {
        let e = c
            .call(cmd!["AUTH", format!("guess-{n}")])
            .await
            .expect_err("a wrong password")
            .to_string();
        assert!(e.contains("WRONGPASS"), "try {n}: {e}");
    }
    assert!(
        c.call(cmd!["AUTH", PASSWORD]).await.is_err(),
        "the connection was closed after five refused logins"
    );
    let mut ok = client(&url, 0, "app").await;
    assert_eq!(
        ok.call(cmd!["PING"]).await.expect("ping"),
        Value::Simple("PONG".into())
    );
}

/// A pipeline whose answers add up to megabytes is answered in order and whole (the proxy
/// sends them on as they come instead of holding the batch's answers).
#[tokio::test]
async fn a_pipeline_of_large_answers_arrives_whole_and_in_order() {
    let (_proxy, url) = proxy().await;
    let mut c = client(&url, 0, "app").await;
    let prefix = unique("big-");
    let keys: Vec<String> = (0..24).map(|i| format!("{prefix}:{i}")).collect();
    let value = |i: usize| vec![b'a' + (i % 26) as u8; 100 * 1024];
    c.pipeline(
        keys.iter()
            .enumerate()
            .map(|(i, k)| cmd!["SET", k.as_str(), value(i)])
            .collect(),
    )
    .await
    .expect("set");
    let got = c
        .pipeline(keys.iter().map(|k| cmd!["GET", k.as_str()]).collect())
        .await
        .expect("get");
    assert_eq!(got.len(), keys.len());
    for (i, v) in got.into_iter().enumerate() {
        assert_eq!(v, Value::Bulk(Some(value(i))), "answer {i}");
    }
    let mut del = vec![b"DEL".to_vec()];
    del.extend(keys.iter().map(|k| k.as_bytes().to_vec()));
    c.call(del).await.expect("clean");
}

/// A database the migration does not copy cannot be used through the proxy: its writes would
/// stay on Heroku. The refusal names the databases that may be used.
#[tokio::test]
async fn a_database_the_migration_does_not_copy_is_refused() {
    let (proxy, url) = proxy().await;
    proxy.limit_databases(vec![0, 5]);
    let mut c = client(&url, 0, "app").await;
    let e = c
        .call(cmd!["SELECT", "3"])
        .await
        .expect_err("database 3 is not copied")
        .to_string();
    assert!(
        e.contains("not one the migration copies") && e.contains("0, 5"),
        "{e}"
    );
    assert_eq!(
        c.call(cmd!["SELECT", "5"])
            .await
            .expect("a copied database"),
        Value::Simple("OK".into())
    );
    let refused = Conn::connect(&RedisUrl::parse(&url.replace("/DB", "/3")).expect("url")).await;
    assert!(
        refused.is_err(),
        "a client URL naming database 3 is refused at connect"
    );
}

/// AUTH inside MULTI is refused with an error that says so, and the transaction is aborted at
/// EXEC as Redis aborts one with a command refused while queuing: nothing of it runs.
#[tokio::test]
async fn auth_inside_a_transaction_is_refused_and_aborts_it() {
    let (_proxy, url) = proxy().await;
    let mut c = client(&url, 0, "app").await;
    let key = unique("tx-");
    let answers = c
        .pipeline(vec![
            cmd!["MULTI"],
            cmd!["SET", key.as_str(), "1"],
            cmd!["AUTH", PASSWORD],
            cmd!["EXEC"],
        ])
        .await;
    let text = format!("{answers:?}");
    assert!(
        text.contains("AUTH-INSIDE-MULTI") && text.contains("EXECABORT"),
        "{text}"
    );
    assert!(!on_source(&key).await, "the transaction did not run");
    assert_eq!(
        c.call(cmd!["PING"]).await.expect("the session goes on"),
        Value::Simple("PONG".into())
    );
}

/// One answer larger than the proxy's send threshold reaches the client while the server is
/// still sending it: the proxy passes an answer on as it arrives instead of holding it whole
/// (a `GET` of a large value or `KEYS *` would otherwise cost its size in the task's memory).
/// The server here is a stand-in that sends half of a 4 MiB value and then waits until the
/// client has shown it received that half.
#[tokio::test]
async fn one_large_answer_streams_through_before_the_server_has_finished_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SIZE: usize = 4 * 1024 * 1024;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.expect("accept");
        let mut buf = Vec::new();
        let mut released = Some(released);
        loop {
            while let Some((args, used)) = ferry_kv::resp::command(&buf).expect("command") {
                buf.drain(..used);
                let name = String::from_utf8_lossy(&args[0]).to_uppercase();
                if name == "CLIENT" {
                    sock.write_all(b":7\r\n").await.expect("answer");
                } else if name == "GET" {
                    sock.write_all(format!("${SIZE}\r\n").as_bytes())
                        .await
                        .expect("header");
                    sock.write_all(&vec![b'h'; SIZE / 2]).await.expect("half");
                    if let Some(r) = released.take() {
                        r.await.expect("released");
                    }
                    sock.write_all(&vec![b't'; SIZE / 2]).await.expect("rest");
                    sock.write_all(b"\r\n").await.expect("end");
                } else {
                    sock.write_all(b"+OK\r\n").await.expect("answer");
                }
            }
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    let certs = PathBuf::from(bed_var("FERRY_BED_DIR")).join("certs");
    let tls = ferry_kv::proxy::tls_acceptor(&certs.join("server.crt"), &certs.join("server.key"))
        .expect("tls");
    let front = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let front_port = front.local_addr().expect("addr").port();
    let p = Proxy::new(
        RedisUrl::parse(&format!("redis://127.0.0.1:{port}/0")).expect("stand-in URL"),
        None,
        Secret::new(PASSWORD),
        10,
    );
    p.serve(front, Some(tls));
    let url = format!(
        "rediss://:{PASSWORD}@127.0.0.1:{front_port}/0?sslrootcert={}",
        bed_var("FERRY_BED_CA")
    );
    let c = Conn::connect(&RedisUrl::parse(&url).expect("url"))
        .await
        .expect("connect through the proxy");
    let (mut io, mut got) = c.into_parts();
    io.write_all(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n")
        .await
        .expect("send");
    // The first half must arrive while the stand-in still holds the second.
    let header = format!("${SIZE}\r\n").len();
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        while got.len() < header + SIZE / 2 {
            let mut chunk = vec![0u8; 64 * 1024];
            let n = io.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the proxy closed the connection");
            got.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "only {} of the answer's first {} bytes reached the client while the server was still sending: the proxy held the answer",
        got.len(),
        header + SIZE / 2
    );
    release.send(()).expect("release");
    while got.len() < header + SIZE + 2 {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = io.read(&mut chunk).await.expect("read");
        assert!(n > 0, "the proxy closed the connection");
        got.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(got.len(), header + SIZE + 2, "nothing more than the answer");
    assert!(got[header..header + SIZE / 2].iter().all(|b| *b == b'h'));
    assert!(
        got[header + SIZE / 2..header + SIZE]
            .iter()
            .all(|b| *b == b't')
    );
}
