//! `--scale`: one large dataset, Ferry's copy alone (no peers: at 20 GB each peer would take
//! as long again, and the disk holds one source and one target), its time and the process's
//! peak RSS. Writes its own page (docs/benchmarks-scale.md), leaving docs/benchmarks.md alone.

use std::time::Instant;

use crate::{Args, Bed, dataset, drop_db, peak_rss_mib, race, recreate, yes};

/// What a scale run measured.
struct Scale {
    data: dataset::Dataset,
    ferry: race::FerryRun,
    rss_after_generation: f64,
    rss: f64,
}

/// Generates `args.gb` GB of `args.shape` on the source, copies it with Ferry into a fresh
/// target database, and writes the page.
pub async fn run(args: &Args, bed: &Bed, meter: &crate::cpu::Meter) -> anyhow::Result<()> {
    let command = format!(
        "ferry-bench --scale --gb {} --shape {} --out {}",
        args.gb,
        args.shape.tag(),
        args.out.display()
    );
    let t = Instant::now();
    println!(
        "generating ~{} GB ({}) on the source…",
        args.gb,
        args.shape.label()
    );
    let db = format!("bench_scale_{}", args.shape.tag());
    recreate(&bed.source_admin, &db, Some("heroku_app")).await?;
    let source = bed.source_app.with_dbname(&db);
    let data = dataset::generate(&source, args.gb, args.shape).await?;
    println!(
        "generated {:.2} GiB in {:.0} s; copying with Ferry…",
        gib(data.bytes),
        data.took.as_secs_f64()
    );
    let rss_after_generation = peak_rss_mib()?;
    let ferry = race::ferry(bed, meter, &source, &format!("{db}_ferry"), None).await;
    drop_db(&bed.source_admin, &db).await?;
    let scale = Scale {
        data,
        ferry: ferry?,
        rss_after_generation,
        rss: peak_rss_mib()?,
    };
    let md = page(&command, args.shape, &scale, t.elapsed().as_secs_f64());
    print!("{md}");
    crate::write_page(&args.out, &md)
}

fn gib(bytes: i64) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

fn page(command: &str, shape: dataset::Shape, s: &Scale, wall: f64) -> String {
    let f = &s.ferry;
    let t = &f.timings;
    let total = f.total.as_secs_f64();
    let mib = f.bytes as f64 / 1048576.0;
    let source = std::env::var("FERRY_BED_SOURCE_VERSION").unwrap_or_default();
    let target = std::env::var("FERRY_BED_TARGET_VERSION").unwrap_or_default();
    format!(
        "# Benchmark at scale\n\n\
         Produced by `make bench-scale` (`{command}`) on the local test bed: source PostgreSQL \
         {source} → target PostgreSQL {target}, both on this 2-core machine ({mem:.0} GiB of \
         memory), TLS on, `fsync=off`. \
         Ferry copies with 2 parallel jobs, as in docs/benchmarks.md. No peer runs here: the \
         comparison with pg_dump and pgcopydb is in docs/benchmarks.md, at 2 GB.\n\n\
         - dataset: {shape}, {size:.2} GiB (`pg_database_size`), generated in {gen:.0} s; the \
         largest table, `{largest}`, holds {share:.0}% of the tables' bytes.\n\n\
         | measure | result | goal | met |\n|---|---|---|---|\n\
         | Ferry, schema to indexes | {total:.1} s (schema {schema:.1}, capture {capture:.1}, copy \
         with keys and indexes built as each table is copied {copy:.1}, post-data after it \
         {post:.1}) | — | — |\n\
         | rows and COPY data | {rows} rows, {mib:.0} MiB ({rate:.0} MiB/s over the whole \
         run) | — | — |\n\
         | CPU over Ferry's run | {cpu} | — | — |\n\
         | peak RSS of the copying process (VmHWM) | {rss:.0} MiB (after generating the data, \
         before the copy: {rss0:.0} MiB) | ≤ 256 MiB | {met} |\n\n\
         The copying process is the bench itself: it runs Ferry's replicator library in \
         process, as the worker does. The whole run, generation included, took {wall:.0} s.\n",
        mem = memory_gib(),
        shape = shape.label(),
        size = gib(s.data.bytes),
        gen = s.data.took.as_secs_f64(),
        largest = s.data.largest,
        share = 100.0 * s.data.largest_share,
        schema = t.schema.as_secs_f64(),
        capture = t.capture.as_secs_f64(),
        copy = t.copy.as_secs_f64(),
        post = t.post_data.as_secs_f64(),
        rows = f.rows,
        cpu = f.cpu.describe("Ferry", f.total),
        rate = mib / total,
        rss = s.rss,
        rss0 = s.rss_after_generation,
        met = yes(s.rss <= 256.0),
    )
}

/// The machine's memory (MemTotal), for the page: whether the data fits in the page cache.
fn memory_gib() -> f64 {
    crate::proc_kib("/proc/meminfo", "MemTotal:").map_or(f64::NAN, |kib| kib / 1048576.0)
}
