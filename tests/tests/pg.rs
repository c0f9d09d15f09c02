//! TLS connections to the source and target clusters of the bed.

use ferry_pg::{PgUrl, TlsCheck, server_info};
use ferry_tests::{Side, TestDb, bed_var};

#[tokio::test]
async fn both_clusters_speak_tls_at_the_expected_versions() {
    for side in [Side::Source, Side::Target] {
        let url = side.admin_url();
        assert_eq!(url.tls_check(), TlsCheck::VerifyFull);
        let client = url.connect().await.expect("connect with verify-full");
        let info = server_info(&client).await.expect("server info");
        assert!(info.ssl, "{side:?} session is not encrypted");
        assert!(info.ssl_version.is_some_and(|v| v.starts_with("TLS")));
        assert_eq!(info.major, side.major(), "{side:?} major version");
        assert_eq!(info.wal_level, "logical");
    }
}

#[tokio::test]
async fn rows_travel_from_a_pg15_source_to_a_newer_target() {
    let db = TestDb::new("pg_copy_").await;
    let source = db.url(Side::Source).connect().await.expect("source");
    let target = db.url(Side::Target).connect().await.expect("target");
    assert!(Side::Target.major() >= Side::Source.major());
    let ddl =
        "CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL, balance numeric(12,2))";
    source.batch_execute(ddl).await.expect("create on source");
    target.batch_execute(ddl).await.expect("create on target");
    source
        .batch_execute(
            "INSERT INTO accounts SELECT g, 'user' || g || '@example.com', g * 1.5 FROM generate_series(1, 500) g",
        )
        .await
        .expect("fill source");
    let rows = source
        .query(
            "SELECT id, email, balance::text FROM accounts ORDER BY id",
            &[],
        )
        .await
        .expect("read source");
    let insert = target
        .prepare("INSERT INTO accounts VALUES ($1, $2, $3::text::numeric)")
        .await
        .expect("prepare");
    for row in &rows {
        let (id, email, balance): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
        target
            .execute(&insert, &[&id, &email, &balance])
            .await
            .expect("write target");
    }
    let digest = "SELECT count(*), md5(string_agg(id || ':' || email || ':' || balance, ',' ORDER BY id)) FROM accounts";
    let a = source.query_one(digest, &[]).await.expect("digest source");
    let b = target.query_one(digest, &[]).await.expect("digest target");
    assert_eq!(a.get::<_, i64>(0), 500);
    assert_eq!(
        (a.get::<_, i64>(0), a.get::<_, String>(1)),
        (b.get::<_, i64>(0), b.get::<_, String>(1))
    );
}

#[tokio::test]
async fn plaintext_is_refused_by_the_servers() {
    let url = bed_var("FERRY_BED_SOURCE_URL");
    let base = url.split('?').next().expect("url");
    let config: tokio_postgres::Config = format!("{base}?sslmode=disable").parse().expect("config");
    let Err(err) = config.connect(tokio_postgres::NoTls).await else {
        panic!("the bed accepted a non-TLS connection");
    };
    let text = ferry_pg::describe(&err);
    assert!(text.contains("no encryption"), "{text}");
    // And Ferry itself refuses to try.
    let err = PgUrl::parse(&format!("{base}?sslmode=disable")).expect_err("refused");
    assert_eq!(err.step_error_name(), "Ferry.Blocked.InvalidUrl");
}

#[tokio::test]
async fn verify_full_rejects_a_certificate_from_an_unknown_ca() {
    let url = bed_var("FERRY_BED_TARGET_URL");
    let base = url.split('?').next().expect("url");
    // Without sslrootcert the public web roots are used, which never signed the bed's CA.
    let err = PgUrl::parse(&format!("{base}?sslmode=verify-full"))
        .expect("parse")
        .connect()
        .await
        .expect_err("unknown CA");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    assert!(
        !err.to_string().contains("ferry-bed-password"),
        "password leaked: {err}"
    );
}

#[tokio::test]
async fn an_rds_host_is_checked_against_the_shipped_rds_bundle_by_default() {
    // The bed's target answers under an RDS endpoint name (hostaddr points the name at it):
    // with no sslmode in the URL, Ferry checks the certificate against AWS's RDS roots, which
    // never signed the bed's CA, so the connection is refused instead of silently trusted.
    let url = bed_var("FERRY_BED_TARGET_URL");
    let base = url.split('?').next().expect("url");
    let (creds, rest) = base.rsplit_once('@').expect("credentials");
    let (hostport, db) = rest.split_once('/').expect("database");
    let port = hostport.rsplit_once(':').map_or("5432", |(_, p)| p);
    let rds = format!(
        "{creds}@app.c9akciq32xyz.us-east-1.rds.amazonaws.com:{port}/{db}?hostaddr=127.0.0.1"
    );
    let parsed = PgUrl::parse(&rds).expect("parse");
    assert_eq!(parsed.tls_check(), TlsCheck::VerifyFull);
    let err = parsed.connect().await.expect_err("not an RDS certificate");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    // Told to encrypt only, as before, it connects: the default is what changed.
    let required = PgUrl::parse(&format!("{rds}&sslmode=require")).expect("parse");
    assert_eq!(required.tls_check(), TlsCheck::EncryptOnly);
    required
        .connect()
        .await
        .expect("sslmode=require still connects");
}

#[tokio::test]
async fn require_mode_encrypts_without_a_root_certificate() {
    // Heroku's certificates do not chain to a public CA on every plan: sslmode=require must
    // still connect, encrypted.
    let url = bed_var("FERRY_BED_SOURCE_APP_URL");
    let base = url.split('?').next().expect("url");
    let url = PgUrl::parse(&format!("{base}?sslmode=require")).expect("parse");
    assert_eq!(url.tls_check(), TlsCheck::EncryptOnly);
    let client = url.connect().await.expect("connect");
    assert!(server_info(&client).await.expect("info").ssl);
}

#[tokio::test]
async fn the_source_app_role_is_heroku_like() {
    let client = PgUrl::parse(&bed_var("FERRY_BED_SOURCE_APP_URL"))
        .expect("parse")
        .connect()
        .await
        .expect("connect as the app role");
    let row = client
        .query_one(
            "SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .expect("read role");
    assert_eq!(
        (row.get::<_, bool>(0), row.get::<_, bool>(1)),
        (false, false)
    );
}
