//! The integration-test harness: access to the local test bed that `tests/bed/bed.py up`
//! started (real PostgreSQL source and target, the AWS emulator, the fake Heroku API).
//!
//! The bed's coordinates come from the environment (`bed.env`, exported by `make test`). The
//! AWS SDK is configured exactly as in production, from `AWS_ENDPOINT_URL` and friends.
//! Every test gets its own databases, DynamoDB table and Heroku app, so tests run in parallel.

pub mod aws;
pub mod destination;
pub mod endpoint;
pub mod gate;
pub mod jobs;
pub mod rehearsal;
pub mod sink;
pub mod verifier;
pub mod workload;

use std::sync::Arc;

use ferry_aws::DynamoStore;
use ferry_pg::PgUrl;
use rand::Rng;

/// The bed's Heroku-like source role (no SUPERUSER, no REPLICATION).
pub const APP_ROLE: &str = "heroku_app";

/// Reads a test-bed variable, or fails the test saying how to start the bed.
pub fn bed_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the test bed is not running. Run `make test`, or \
             `make bed-up`, then `set -a; . /tmp/ferry-bed/bed.env; set +a; cargo nextest run`"
        )
    })
}

/// A short random suffix for names that must not collide between tests.
pub fn unique(prefix: &str) -> String {
    let n: u32 = rand::rng().random();
    format!("{prefix}{n:08x}")
}

/// Which cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Plays Heroku Postgres.
    Source,
    /// Plays RDS.
    Target,
    /// Plays a Heroku Postgres of PostgreSQL 14 (Heroku still runs it).
    Legacy,
}

impl Side {
    /// The superuser URL of the cluster's `postgres` database.
    pub fn admin_url(self) -> PgUrl {
        let var = match self {
            Side::Source => "FERRY_BED_SOURCE_URL",
            Side::Target => "FERRY_BED_TARGET_URL",
            Side::Legacy => "FERRY_BED_LEGACY_URL",
        };
        PgUrl::parse(&bed_var(var)).expect("the bed's URL parses")
    }

    /// The cluster's major version, as the bed started it.
    pub fn major(self) -> i32 {
        let var = match self {
            Side::Source => "FERRY_BED_SOURCE_VERSION",
            Side::Target => "FERRY_BED_TARGET_VERSION",
            Side::Legacy => "FERRY_BED_LEGACY_VERSION",
        };
        bed_var(var).parse().expect("a whole number")
    }
}

/// A database of its own on both clusters for one test, dropped when the test ends.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    /// An extra database on the source cluster, used as the target of a same-version
    /// (15 → 15) migration.
    same_cluster_target: Option<String>,
    /// The cluster the source database is on: [`Side::Source`], or [`Side::Legacy`] (14).
    source: Side,
}

impl TestDb {
    /// Creates `<prefix><random>` on source and target, owned by their superusers.
    pub async fn new(prefix: &str) -> Self {
        Self::create(prefix, None).await
    }

    /// Like [`TestDb::new`], but the source database is owned by the bed's Heroku-like app
    /// role (no SUPERUSER, no REPLICATION), which creates the app's tables there.
    pub async fn heroku_like(prefix: &str) -> Self {
        Self::create(prefix, Some(APP_ROLE)).await
    }

    /// Like [`TestDb::heroku_like`], with the source database on the bed's PostgreSQL 14
    /// cluster.
    pub async fn heroku_like_pg14(prefix: &str) -> Self {
        Self::create_on(prefix, Some(APP_ROLE), Side::Legacy).await
    }

    async fn create(prefix: &str, source_owner: Option<&str>) -> Self {
        Self::create_on(prefix, source_owner, Side::Source).await
    }

    async fn create_on(prefix: &str, source_owner: Option<&str>, source: Side) -> Self {
        let name = unique(prefix);
        for side in [source, Side::Target] {
            let admin = side.admin_url().connect().await.expect("connect as admin");
            let owner = match (side, source_owner) {
                (Side::Source | Side::Legacy, Some(role)) => format!(" OWNER {role}"),
                _ => String::new(),
            };
            admin
                .batch_execute(&format!("CREATE DATABASE \"{name}\"{owner}"))
                .await
                .expect("create test database");
        }
        Self {
            name,
            same_cluster_target: None,
            source,
        }
    }

    /// Like [`TestDb::heroku_like`], plus a target database on the *source* cluster, so the
    /// migration is between two servers of the same major version.
    pub async fn heroku_like_same_version(prefix: &str) -> Self {
        let mut db = Self::create(prefix, Some(APP_ROLE)).await;
        let extra = format!("{}_t", db.name);
        Side::Source
            .admin_url()
            .connect()
            .await
            .expect("connect as admin")
            .batch_execute(&format!("CREATE DATABASE \"{extra}\""))
            .await
            .expect("create same-version target database");
        db.same_cluster_target = Some(extra);
        db
    }

    /// The migration's target: the target cluster's database, or the same-version one.
    pub fn target_url(&self) -> PgUrl {
        match &self.same_cluster_target {
            Some(extra) => Side::Source.admin_url().with_dbname(extra),
            None => self.url(Side::Target),
        }
    }

    /// The app role's URL of this test's source database.
    pub fn source_app_url(&self) -> PgUrl {
        let var = match self.source {
            Side::Legacy => "FERRY_BED_LEGACY_APP_URL",
            _ => "FERRY_BED_SOURCE_APP_URL",
        };
        PgUrl::parse(&bed_var(var))
            .expect("the bed's URL parses")
            .with_dbname(&self.name)
    }

    /// Runs a SQL file from `tests/fixtures/` through `url`.
    pub async fn load(url: &PgUrl, fixture: &str) {
        let path = tests_dir().join("fixtures").join(fixture);
        let sql = std::fs::read_to_string(&path).expect("read fixture");
        url.connect()
            .await
            .expect("connect")
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("load {fixture}: {}", ferry_pg::describe(&e)));
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Superuser URL of this test's database on `side`.
    pub fn url(&self, side: Side) -> PgUrl {
        let side = match side {
            Side::Source => self.source,
            other => other,
        };
        side.admin_url().with_dbname(&self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let extra = self.same_cluster_target.clone();
        let source = self.source;
        // Drop runs outside async context: use a small runtime on its own thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let mut drops = vec![(source, name.clone()), (Side::Target, name)];
                drops.extend(extra.map(|e| (Side::Source, e)));
                for (side, db) in drops {
                    if let Ok(admin) = side.admin_url().connect().await {
                        let _ = admin
                            .batch_execute(&format!(
                                "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
                            ))
                            .await;
                    }
                }
            });
        })
        .join();
    }
}

/// A DynamoDB store on a fresh table of the emulator, configured from the environment exactly
/// as the Lambda functions configure theirs.
pub async fn fresh_store() -> Arc<DynamoStore> {
    bed_var("AWS_ENDPOINT_URL");
    let config = ferry_aws::sdk_config().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = unique("ferry-test-");
    ferry_aws::create_table(&client, &table)
        .await
        .expect("create table in the emulator");
    Arc::new(DynamoStore::new(client, table))
}

/// The fake Heroku API's base URL and the token it accepts.
pub fn heroku() -> (String, String) {
    (
        bed_var("FERRY_BED_HEROKU_URL"),
        bed_var("FERRY_BED_HEROKU_TOKEN"),
    )
}

/// Creates an app of its own on the fake Heroku API (web + worker formation, a Postgres
/// add-on attached as DATABASE with `database_url`, one custom domain) and returns its name.
pub async fn heroku_app(database_url: &str, config_vars: serde_json::Value) -> String {
    let name = unique("t-");
    create_heroku_app(serde_json::json!({
        "name": name,
        "database_url": database_url,
        "config_vars": config_vars,
        "domains": [format!("{name}.example.com")],
    }))
    .await;
    name
}

/// Creates an app on the fake Heroku API as `body` describes it (name, formation, add-ons,
/// config vars, domains, database URL).
pub async fn create_heroku_app(body: serde_json::Value) {
    let (base, _) = heroku();
    let resp = reqwest::Client::new()
        .post(format!("{base}/__bed/apps"))
        .json(&body)
        .send()
        .await
        .expect("reach the fake Heroku API");
    assert_eq!(
        resp.status().as_u16(),
        201,
        "create app on the fake Heroku API"
    );
}

/// A migration spec for tests: `examples/minimal.json` with the given id and app.
pub fn spec(migration_id: &str, app: &str) -> ferry_core::MigrationSpec {
    let text = include_str!("../../examples/minimal.json");
    let mut v: serde_json::Value = serde_json::from_str(text).expect("example is JSON");
    v["migration_id"] = migration_id.into();
    v["heroku"]["app"] = app.into();
    ferry_core::spec::from_value(&v).expect("example spec is valid")
}

/// The credentials of the role `infra/template.yaml` gives `binary` (a role session the bed
/// made in the emulator, whose IAM enforcement then authorises every call it signs): what
/// Lambda or ECS would put in the environment of the process that runs it.
pub fn role_env(binary: &str) -> Vec<(String, String)> {
    let path = std::path::PathBuf::from(bed_var("FERRY_BED_ROLES")).join(format!("{binary}.env"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the bed makes one per binary with a role)",
            path.display()
        )
    });
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The path of a workspace binary built next to this test binary (`make test` builds them all).
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/debug/deps/integration-… (tests) or target/debug/ferry-demo (the demo).
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build -p {name}` (make test builds every binary)",
        path.display()
    );
    path
}

/// A pending approval of `gate` waiting on `token`, as the gate step stores it.
pub fn pending_approval(
    migration_id: &str,
    gate: ferry_core::state::Gate,
    token: &str,
) -> ferry_core::state::ApprovalRequest {
    ferry_core::state::ApprovalRequest {
        migration_id: migration_id.to_string(),
        gate,
        task_token: token.into(),
        requested_at: chrono::Utc::now(),
        status: ferry_core::state::ApprovalStatus::Pending,
        decided_by: None,
        decided_at: None,
    }
}

/// Ferry's capture objects and bookkeeping left in a database: `ferry_*` triggers plus the
/// `ferry` schema (0 after a clean-up).
pub async fn capture_leftovers(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'ferry\\_%')
                  + (SELECT count(*) FROM pg_namespace WHERE nspname = 'ferry')",
            &[],
        )
        .await
        .expect("read the catalog")
        .get(0)
}

/// RUST_LOG for the worker processes tests start: `FERRY_TEST_WORKER_LOG`, or `warn`.
pub fn worker_log_filter() -> String {
    std::env::var("FERRY_TEST_WORKER_LOG").unwrap_or_else(|_| "warn".into())
}

/// The repository's root directory.
pub fn repo_root() -> std::path::PathBuf {
    tests_dir()
        .parent()
        .expect("the tests crate lives in the repository")
        .to_path_buf()
}

/// This crate's directory. Taken from the environment cargo and nextest give a test at run
/// time when it names this crate: the path compiled in may be another checkout's, because
/// cargo reuses the artifacts of a checkout elsewhere that shares the target directory when
/// this one's files are older (it tracks workspace files by relative path), and its files
/// would then be read instead of this checkout's.
pub fn tests_dir() -> std::path::PathBuf {
    let compiled = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match std::env::var_os("CARGO_MANIFEST_DIR").map(std::path::PathBuf::from) {
        Some(dir) if dir.join("src/rehearsal.rs").is_file() => dir,
        _ => compiled,
    }
}
