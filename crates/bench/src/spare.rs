//! What the snapshot copy costs the app on the source: the write latency of an app-like load
//! (ferry rehearse's synthetic load: single-row inserts, updates and deletes at a fixed rate,
//! through a session that logs in as the app) during a copy at full speed and during one held
//! to `replication.max_copy_mb_per_second`.

use std::time::Instant;

use ferry_pg::PgUrl;
use ferry_rehearse::{
    load::{self, Load},
    report::quantiles,
};

use crate::{Bed, race};

pub struct Spared {
    pub mb_per_second: Option<u32>,
    pub copy_seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub writes: usize,
}

/// Writes per second of the app-like load.
pub const WRITES_PER_SECOND: u32 = 200;

/// One copy of `source` (the app's URL) under the load, at `mb_per_second` or full speed.
pub async fn copy_under_load(
    bed: &Bed,
    meter: &crate::cpu::Meter,
    source: &PgUrl,
    mb_per_second: Option<u32>,
) -> anyhow::Result<Spared> {
    let admin = source.connect().await?;
    load::create(&admin).await?;
    let writes = Load::start(source.clone(), WRITES_PER_SECOND);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let from = Instant::now();
    let run = race::ferry(
        bed,
        meter,
        source,
        "bench_spare",
        mb_per_second.map(|mb| u64::from(mb) * 1_000_000),
    )
    .await;
    let window = run.as_ref().map(|r| {
        // The copy's own window: after the schema and capture, before the post-data.
        let start = from + r.timings.schema + r.timings.capture;
        (start, start + r.timings.copy)
    });
    let mut samples = match window {
        Ok((start, end)) => writes.latencies_ms(start, end),
        Err(_) => Vec::new(),
    };
    writes.stop().await;
    load::drop_schema(&admin, "source").await?;
    let run = run?;
    let (p50, p99) = quantiles(&mut samples);
    Ok(Spared {
        mb_per_second,
        copy_seconds: run.timings.copy.as_secs_f64(),
        p50_ms: p50.unwrap_or(f64::NAN),
        p99_ms: p99.unwrap_or(f64::NAN),
        writes: samples.len(),
    })
}
