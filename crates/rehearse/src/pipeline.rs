//! The rehearsal, stage by stage, with the engine the worker and the cutover use.

use std::time::{Duration, Instant};

use ferry_pg::{PgUrl, freeze, preflight};
use ferry_replicator::{
    engine::{Config, Replicator},
    schema::Tools,
};
use tokio_postgres::Client;

use crate::{
    LocalServer, Options, RehearseError, find_bin, guard,
    load::{self, Load},
    report::{
        CatchUpFigures, CopyFigures, FreezeFigures, Report, SourceFacts, VerifyFigures, quantiles,
        spread,
    },
};

/// The cutover's sequence margin (as `ferry_steps::cutover::SEQUENCE_GAP`).
const SEQUENCE_GAP: i64 = 1000;
/// Rows of the apply-rate burst (twice as many changes: inserted, then updated).
const BURST_ROWS: i64 = 10_000;

/// Runs a rehearsal. The scratch server, if one was started, is stopped and removed when this
/// returns (unless kept); Ferry's objects on the source are removed whatever happened.
pub async fn run(opts: &Options) -> Result<Report, RehearseError> {
    let started = Instant::now();
    let source = opts.source.connect().await?;
    let info = ferry_pg::server_info(&source).await?;
    let traffic = guard::observe(&source, Duration::from_secs(3)).await?;
    guard::check(&traffic, opts.production)?;
    let (bin, bin_major) = find_bin(opts.pg_bin.as_deref(), info.major)?;
    let (local, target_url) = match &opts.target {
        Some(url) => (None, url.clone()),
        None => {
            let l = LocalServer::start(&bin, bin_major, opts.keep_target)?;
            let url = l.url.clone();
            (Some(l), url)
        }
    };
    let target = target_url.connect().await?;
    ensure_empty(&target, &target_url).await?;
    let mut pre = preflight::analyse(&source, &target, opts.capture, opts.parallelism).await?;
    pre.findings.extend(preflight::unchecked_source_certificate(
        &opts.source,
        "source URL",
    ));
    let mut report = Report {
        source_url: opts.source.redacted().to_string(),
        target: match &local {
            Some(l) if opts.keep_target => format!(
                "scratch PostgreSQL {} kept at {} ({})",
                l.major,
                l.dir().display(),
                l.url.redacted()
            ),
            Some(l) => format!("scratch PostgreSQL {} (removed afterwards)", l.major),
            None => target_url.redacted().to_string(),
        },
        source: SourceFacts {
            major: info.major,
            tables: pre.tables.len(),
            bytes: pre.total_bytes(),
            traffic,
        },
        capture: pre.capture,
        ..Report::default()
    };
    for f in &pre.findings {
        match f.severity {
            preflight::Severity::Blocker => report.blockers.push(f.clone()),
            preflight::Severity::Warning => report.warnings.push(f.clone()),
            preflight::Severity::Info => {}
        }
    }
    if let (true, Some(capture)) = (report.blockers.is_empty(), pre.capture) {
        let cfg = Config {
            source: opts.source.clone(),
            target: target_url.clone(),
            tools: Tools { bin_dir: bin },
            parallelism: opts.parallelism.max(1) as usize,
            rows_per_chunk: 250_000,
            batch_size: 5_000,
            capture,
            max_copy_bytes_per_second: opts
                .max_copy_mb_per_second
                .map(|mb| u64::from(mb) * 1_000_000),
            logical_transport: ferry_core::spec::LogicalTransport::default(),
        };
        // The role the app's sessions log in as here: the one the freezes freeze.
        let role: String = source
            .query_one("SELECT current_user::text", &[])
            .await
            .map_err(|e| RehearseError::sql("read the source's role", &e))?
            .get(0);
        let moved = replicate(opts, cfg.clone(), &source, &role, &mut report).await;
        let cleaned = cleanup(cfg, &role).await;
        report.source_objects_left = leftovers(&source, &role).await?;
        moved?;
        cleaned?;
        report.project(opts.production_bytes, opts.production_writes_per_second);
    }
    drop(local);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Refuses a target that holds any table: the rehearsal never writes over someone's data.
async fn ensure_empty(target: &Client, url: &PgUrl) -> Result<(), RehearseError> {
    let row = target
        .query_one(
            "SELECT count(*), min(format('%I.%I', n.nspname, c.relname))
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p')
                AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname NOT LIKE 'pg\\_%'",
            &[],
        )
        .await
        .map_err(|e| RehearseError::sql("look for tables on the target", &e))?;
    let tables: i64 = row.get(0);
    if tables > 0 {
        return Err(RehearseError::TargetNotEmpty {
            url: url.redacted().to_string(),
            tables,
            example: row.get::<_, Option<String>>(1).unwrap_or_default(),
        });
    }
    Ok(())
}

/// Schema, capture, copy and post-data under the load; catch-up, burst, stream and freezes
/// still under it; then the load stops and both sides are compared.
async fn replicate(
    opts: &Options,
    cfg: Config,
    source: &Client,
    role: &str,
    report: &mut Report,
) -> Result<(), RehearseError> {
    load::create(source).await?;
    let mut rep = Replicator::connect(cfg).await?;
    let load =
        (opts.load_per_second > 0).then(|| Load::start(opts.source.clone(), opts.load_per_second));
    let under_load = stages_under_load(opts, &mut rep, (source, role), load.as_ref(), report).await;
    if let Some(l) = load {
        report.load = Some(l.stop().await);
    }
    under_load?;
    rep.drain(None).await?;
    let t = Instant::now();
    let foreign_keys_validated = rep.validate_foreign_keys().await?;
    let checks = rep.verify().await?;
    report.verify = Some(VerifyFigures {
        tables: checks.len(),
        rows: checks.iter().map(|c| c.source_rows).sum(),
        seconds: t.elapsed().as_secs_f64(),
        differing: checks
            .iter()
            .filter(|c| !c.equal())
            .map(|c| c.table.clone())
            .collect(),
        foreign_keys_validated,
    });
    Ok(())
}

async fn stages_under_load(
    opts: &Options,
    rep: &mut Replicator,
    (source, role): (&Client, &str),
    load: Option<&Load>,
    report: &mut Report,
) -> Result<(), RehearseError> {
    let began = Instant::now();
    let timings = rep.prepare().await?;
    let mut during = load.map_or_else(Vec::new, |l| l.latencies_ms(began, Instant::now()));
    let (app_write_p50_ms, app_write_p99_ms) = quantiles(&mut during);
    let status = rep.status().await?;
    let secs = |d: Duration| d.as_secs_f64();
    let copy_and_post = secs(timings.copy + timings.post_data);
    report.copy = Some(CopyFigures {
        schema_seconds: secs(timings.schema),
        capture_seconds: secs(timings.capture),
        copy_seconds: secs(timings.copy),
        post_data_seconds: secs(timings.post_data),
        rows: status.rows_copied,
        copy_bytes: status.bytes_copied,
        disk_bytes_per_second: if copy_and_post > 0.0 {
            report.source.bytes as f64 / copy_and_post
        } else {
            0.0
        },
        max_copy_mb_per_second: opts.max_copy_mb_per_second,
        app_write_p50_ms,
        app_write_p99_ms,
        app_writes: during.len(),
    });
    let mut catch = CatchUpFigures {
        backlog_at_copy_end: status.lag_changes,
        ..CatchUpFigures::default()
    };
    let t = Instant::now();
    while rep.apply_once().await?.changes > 0 {}
    catch.seconds = t.elapsed().as_secs_f64();
    catch.burst_changes = load::burst(source, BURST_ROWS).await?;
    let t = Instant::now();
    let applied = rep.drain(None).await?;
    catch.apply_changes_per_second = applied as f64 / t.elapsed().as_secs_f64().max(0.001);
    stream(rep, Duration::from_secs(opts.stream_seconds), &mut catch).await?;
    report.catch_up = Some(catch);
    for _ in 0..opts.freezes {
        report.freezes.push(freeze_once(rep, source, role).await?);
        // The app's writes come back between freezes, as they would after a real one.
        tokio::time::sleep(Duration::from_secs(2)).await;
        rep.drain(None).await?;
    }
    Ok(())
}

/// Applies as the worker does for `how_long`, sampling the lag four times a second.
async fn stream(
    rep: &mut Replicator,
    how_long: Duration,
    catch: &mut CatchUpFigures,
) -> Result<(), RehearseError> {
    let t = Instant::now();
    let mut samples = Vec::new();
    let mut last = Instant::now() - Duration::from_secs(1);
    while t.elapsed() < how_long {
        if rep.apply_once().await?.changes == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if last.elapsed() >= Duration::from_millis(250) {
            last = Instant::now();
            let lag = rep.status().await?.lag_seconds.unwrap_or(0.0);
            samples.push((lag * 1000.0).round() as u64);
        }
    }
    catch.streamed_seconds = t.elapsed().as_secs_f64();
    catch.lag_samples = samples.len();
    (catch.lag_p50_ms, catch.lag_p99_ms, catch.lag_max_ms) = spread(&mut samples);
    Ok(())
}

/// One cutover freeze as the cutover step runs it: the app's role read-only and its sessions
/// ended, everything up to the head applied, sequences set, then unfrozen. The row-count check
/// inside it is timed apart (the real cutover makes it optional).
async fn freeze_once(
    rep: &mut Replicator,
    source: &Client,
    role: &str,
) -> Result<FreezeFigures, RehearseError> {
    let t = Instant::now();
    let ms = |t: Instant| t.elapsed().as_millis() as u64;
    freeze::freeze_role(source, role).await?;
    let inside = async {
        freeze::end_sessions(source, role).await?;
        let mut f = FreezeFigures {
            frozen_ms: ms(t),
            ..FreezeFigures::default()
        };
        let head = rep.source_head().await?;
        f.drained_changes = rep.drain(Some(&head)).await?;
        f.drained_ms = ms(t);
        rep.sync_sequences(SEQUENCE_GAP).await?;
        f.sequences_ms = ms(t);
        f.counts_equal = rep.count_rows().await?.iter().all(|(_, s, d)| s == d);
        Ok::<_, RehearseError>(f)
    }
    .await;
    let u = Instant::now();
    let unfrozen = freeze::unfreeze_role(source, role).await;
    let mut f = inside?;
    unfrozen?;
    f.total_ms = f.sequences_ms + ms(u);
    Ok(f)
}

/// Removes capture and Ferry's bookkeeping from both sides with the engine's own clean-up, on
/// fresh sessions (the run's own may be the reason it stopped), then the load table, and
/// unfreezes the role.
async fn cleanup(cfg: Config, role: &str) -> Result<(), RehearseError> {
    let (source, target) = (cfg.source.clone(), cfg.target.clone());
    Replicator::connect(cfg).await?.cleanup().await?;
    let src = source.connect().await?;
    load::drop_schema(&src, "source").await?;
    load::drop_schema(&target.connect().await?, "target").await?;
    freeze::unfreeze_role(&src, role).await?;
    Ok(())
}

/// Ferry objects still on the source: schemas, triggers, functions, publication, slot, a
/// frozen role.
async fn leftovers(source: &Client, role: &str) -> Result<Vec<String>, RehearseError> {
    let rows = source
        .query(
            "SELECT 'schema ' || nspname FROM pg_namespace
              WHERE nspname IN ('ferry', 'ferry_rehearsal')
             UNION ALL
             SELECT format('trigger %s on %s', tgname, tgrelid::regclass) FROM pg_trigger
              WHERE tgname LIKE 'ferry\\_%'
             UNION ALL
             SELECT 'function ' || p.oid::regprocedure::text FROM pg_proc p
              WHERE p.proname LIKE 'ferry\\_%'
             UNION ALL
             SELECT 'publication ' || pubname FROM pg_publication WHERE pubname LIKE 'ferry\\_%'
             UNION ALL
             SELECT 'replication slot ' || slot_name FROM pg_replication_slots
              WHERE slot_name LIKE 'ferry\\_%' AND database = current_database()",
            &[],
        )
        .await
        .map_err(|e| RehearseError::sql("look for Ferry objects on the source", &e))?;
    let mut left: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    if freeze::is_frozen(source, role).await? {
        left.push(format!("role {role} still read-only by default"));
    }
    Ok(left)
}
