//! Heroku Key-Value Store → ElastiCache, the data part, on the bed's two real Redis servers
//! (TLS and AUTH on both; the source refuses CONFIG as Heroku does): the copy keeps every
//! type, value and TTL, and the comparison finds every kind of difference. Each test works
//! under its own key prefix.

use ferry_kv::{Conn, RedisUrl, cmd, copy, resp::Value, verify};
use ferry_tests::{bed_var, unique};

async fn conn(var: &str) -> Conn {
    Conn::connect(&RedisUrl::parse(&bed_var(var)).expect("bed URL"))
        .await
        .expect("connect")
}

async fn run(c: &mut Conn, args: Vec<Vec<u8>>) -> Value {
    c.call(args).await.expect("command")
}

/// Strings, hashes, lists, sets, sorted sets and a stream under `p`, some with TTLs.
async fn populate(c: &mut Conn, p: &str) {
    let mut commands = Vec::new();
    for i in 0..300 {
        commands.push(cmd!["SET", format!("{p}s:{i}"), format!("value-{i}")]);
        commands.push(cmd![
            "HSET",
            format!("{p}h:{i}"),
            "a",
            i.to_string(),
            "b",
            "x"
        ]);
    }
    commands.push(cmd![
        "RPUSH",
        format!("{p}queue:default"),
        "job-1",
        "job-2",
        "job-3"
    ]);
    commands.push(cmd!["SADD", format!("{p}queues"), "default", "mailers"]);
    commands.push(cmd![
        "ZADD",
        format!("{p}schedule"),
        "1700000000",
        "job-9",
        "1800000000",
        "job-10"
    ]);
    commands.push(cmd!["XADD", format!("{p}events"), "*", "k", "v"]);
    commands.push(cmd![
        "SET",
        format!("{p}session:abc"),
        "user=1",
        "EX",
        "3600"
    ]);
    commands.push(cmd![
        "SET",
        format!("{p}cache:page"),
        "<html>",
        "PX",
        "900000"
    ]);
    commands.push(cmd!["SET", format!("{p}bin"), b"\x00\xff\r\n".to_vec()]);
    for a in c.pipeline(commands).await.expect("populate") {
        assert!(!matches!(a, Value::Error(_)), "{a:?}");
    }
}

/// Sessions with both servers, a populated source under a new prefix, and the prefix's
/// pattern.
async fn populated() -> (Conn, Conn, String, String) {
    let mut source = conn("FERRY_BED_REDIS_SOURCE_URL").await;
    let target = conn("FERRY_BED_REDIS_TARGET_URL").await;
    let p = unique("kv-");
    populate(&mut source, &format!("{p}:")).await;
    let pattern = format!("{p}:*");
    (source, target, p, pattern)
}

#[tokio::test]
async fn the_copy_keeps_every_type_value_and_ttl_over_tls_with_auth() {
    let (mut source, mut target, p, pattern) = populated().await;

    let stats = copy::copy_db(&mut source, &mut target, Some(pattern.as_bytes()), 100)
        .await
        .expect("copy");
    assert!(stats.keys >= 607, "{stats:?}");
    assert!(stats.with_ttl >= 2, "{stats:?}");

    let report = verify::compare_db(&mut source, &mut target, Some(pattern.as_bytes()), 100, 10)
        .await
        .expect("compare");
    assert!(report.equal(), "{report:?}");
    assert_eq!(report.compared, 607);
    let ttl = run(&mut target, cmd!["PTTL", format!("{p}:session:abc")]).await;
    assert!(
        matches!(ttl, Value::Int(t) if t > 3_500_000 && t <= 3_600_000),
        "{ttl:?}"
    );
    assert_eq!(
        run(
            &mut target,
            cmd!["LRANGE", format!("{p}:queue:default"), "0", "-1"]
        )
        .await,
        Value::Array(Some(
            ["job-1", "job-2", "job-3"]
                .map(|j| Value::Bulk(Some(j.into())))
                .to_vec()
        ))
    );
    assert_eq!(
        run(&mut target, cmd!["GET", format!("{p}:bin")]).await,
        Value::Bulk(Some(b"\x00\xff\r\n".to_vec()))
    );

    // A second pass converges on the same state (RESTORE … REPLACE).
    copy::copy_db(&mut source, &mut target, Some(pattern.as_bytes()), 100)
        .await
        .expect("copy again");
    let again = verify::compare_db(&mut source, &mut target, Some(pattern.as_bytes()), 100, 10)
        .await
        .expect("compare");
    assert!(again.equal(), "{again:?}");
}

#[tokio::test]
async fn the_comparison_names_missing_changed_extra_and_ttl_less_keys() {
    let (mut source, mut target, p, pattern) = populated().await;
    copy::copy_db(&mut source, &mut target, Some(pattern.as_bytes()), 100)
        .await
        .expect("copy");
    run(&mut target, cmd!["DEL", format!("{p}:s:7")]).await;
    run(
        &mut target,
        cmd!["HSET", format!("{p}:h:8"), "a", "tampered"],
    )
    .await;
    run(&mut target, cmd!["SET", format!("{p}:ghost"), "x"]).await;
    run(&mut target, cmd!["PERSIST", format!("{p}:session:abc")]).await;

    let r = verify::compare_db(&mut source, &mut target, Some(pattern.as_bytes()), 50, 10)
        .await
        .expect("compare");
    let key = |k: &str| format!("{p}:{k}").into_bytes();
    assert_eq!(r.missing, vec![key("s:7")], "{r:?}");
    assert_eq!(r.differing, vec![key("h:8")], "{r:?}");
    assert_eq!(r.extra, vec![key("ghost")], "{r:?}");
    assert_eq!(r.ttl_differs, vec![key("session:abc")], "{r:?}");
    assert!(!r.equal());
}

#[tokio::test]
async fn the_source_behaves_like_heroku_and_a_wrong_password_is_refused_without_echo() {
    let mut source = conn("FERRY_BED_REDIS_SOURCE_URL").await;
    let err = source
        .call(cmd!["CONFIG", "GET", "maxmemory-policy"])
        .await
        .expect_err("CONFIG is refused, as on Heroku")
        .to_string();
    assert!(err.contains("refused CONFIG"), "{err}");

    let url =
        bed_var("FERRY_BED_REDIS_SOURCE_URL").replace(":ferry-bed-redis-source@", ":wrong-pass@");
    let err = Conn::connect(&RedisUrl::parse(&url).expect("url"))
        .await
        .expect_err("a wrong password is refused")
        .to_string();
    assert!(err.contains("refused AUTH"), "{err}");
    assert!(!err.contains("wrong-pass"), "{err}");
}
