//! A concurrent writer on the coverage schema (`tests/fixtures/coverage.sql`): inserts,
//! updates (including primary-key changes, partition moves, unique-value swaps and TOASTed
//! values) and deletes, until told to stop or a bound is reached.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use ferry_pg::PgUrl;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// What the writer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkloadStats {
    /// Transactions committed.
    pub committed: u64,
    /// Transactions that failed (e.g. a foreign key to a row deleted meanwhile).
    pub failed: u64,
}

/// Writes until `stop` is set, `max_txns` transactions ran, or `max_time` passed.
pub async fn run(
    url: PgUrl,
    stop: Arc<AtomicBool>,
    seed: u64,
    max_txns: u64,
    max_time: Duration,
) -> WorkloadStats {
    run_with(url, stop, seed, max_txns, max_time, true).await
}

/// [`run`], choosing whether transactions swap unique values between two rows.
pub async fn run_with(
    url: PgUrl,
    stop: Arc<AtomicBool>,
    seed: u64,
    max_txns: u64,
    max_time: Duration,
    swaps: bool,
) -> WorkloadStats {
    let client = url.connect().await.expect("workload connects");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stats = WorkloadStats::default();
    let start = Instant::now();
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) && n < max_txns && start.elapsed() < max_time {
        n += 1;
        let tag = format!("{seed}-{n}");
        let c: i64 = rng.random_range(1..400);
        let c2: i64 = rng.random_range(1..400);
        let sql = match rng.random_range(0..14) {
            0 => format!(
                "INSERT INTO customers (email, name, tags, profile) VALUES ('w{tag}@example.com', 'W {tag}', ARRAY['new'], '{{\"w\": \"{tag}\"}}')"
            ),
            1 => format!(
                "UPDATE customers SET name = name || '!', tags = tags || ARRAY['u{n}'], mood = 'happy' WHERE id = {c}"
            ),
            // Two rows swap their unique emails in one transaction.
            2 if swaps => format!(
                "BEGIN;
                 CREATE TEMP TABLE sw ON COMMIT DROP AS SELECT id, email FROM customers WHERE id IN ({c}, {c2});
                 UPDATE customers SET email = 'tmp-' || id || '-{tag}' WHERE id IN (SELECT id FROM sw);
                 UPDATE customers cu SET email = (SELECT s.email FROM sw s WHERE s.id <> cu.id)
                  WHERE cu.id IN (SELECT id FROM sw) AND (SELECT count(*) FROM sw) = 2;
                 COMMIT;"
            ),
            2 => format!("UPDATE customers SET email = 'moved-{tag}@example.com' WHERE id = {c}"),
            3 => format!("DELETE FROM customers WHERE id = {c}"),
            4 => format!(
                "INSERT INTO \"Billing\".\"Invoices\" (\"InvoiceId\", customer_id, \"Amount\") SELECT md5('w{tag}')::uuid, id, {n}.5 FROM customers WHERE id >= {c} ORDER BY id LIMIT 1"
            ),
            5 => format!(
                "UPDATE \"Billing\".\"Invoices\" SET \"Amount\" = \"Amount\" + 1, lines = lines || '[{{\"n\": {n}}}]' WHERE \"InvoiceId\" IN (SELECT \"InvoiceId\" FROM \"Billing\".\"Invoices\" ORDER BY \"InvoiceId\" OFFSET {c} LIMIT 1)"
            ),
            6 => format!(
                "UPDATE order_items SET line_no = line_no + 1000 + {n} WHERE (order_id, line_no) IN (SELECT order_id, line_no FROM order_items WHERE order_id = {c} % 200 LIMIT 1)"
            ),
            7 => format!(
                "INSERT INTO order_items VALUES ({c} + 1000, {n}, 'NEW-{tag}', {q}, 9.99)",
                q = 1 + n % 5
            ),
            8 => format!(
                "INSERT INTO events (happened_on, kind, payload) VALUES (date '2025-01-01' + {d}, 'w', '{{\"n\": {n}}}')",
                d = rng.random_range(0..700)
            ),
            9 => format!(
                "UPDATE events SET happened_on = happened_on + 200, kind = kind || '>' WHERE id = {c}"
            ),
            10 => format!("DELETE FROM events WHERE id = {c2}"),
            11 => format!(
                "UPDATE documents SET body = (SELECT string_agg(md5('{tag}' || i), ' ') FROM generate_series(1, 500) i) WHERE id = 1 + {c} % 25"
            ),
            12 => format!("UPDATE documents SET title = title || '+' WHERE id = 1 + {c} % 25"),
            _ => format!(
                "BEGIN;
                 DELETE FROM documents WHERE id = 1 + {c2} % 25;
                 INSERT INTO documents (title, body) VALUES ('new {tag}', repeat('{tag} ', 2000));
                 COMMIT;"
            ),
        };
        match client.batch_execute(&sql).await {
            Ok(()) => stats.committed += 1,
            Err(_) => {
                stats.failed += 1;
                // Leave no transaction open after a failure inside BEGIN … COMMIT.
                let _ = client.batch_execute("ROLLBACK").await;
            }
        }
        if n.is_multiple_of(50) {
            tokio::task::yield_now().await;
        }
    }
    stats
}
