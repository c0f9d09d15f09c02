//! The generated datasets: the same four tables in two shapes, by which table is the large one.

use std::time::{Duration, Instant};

use ferry_pg::PgUrl;

/// Which table holds most of the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `orders`, keyed by one bigint: split by key ranges.
    IntegerKey,
    /// `events`, keyed by a uuid (≥ 60 % of the bytes): split by heap-block ranges.
    UuidKey,
}

impl Shape {
    pub fn label(self) -> &'static str {
        match self {
            Shape::IntegerKey => "integer-keyed",
            Shape::UuidKey => "uuid-keyed",
        }
    }

    /// The short name: `--shape`'s value, and part of database names.
    pub fn tag(self) -> &'static str {
        match self {
            Shape::IntegerKey => "int",
            Shape::UuidKey => "uuid",
        }
    }

    /// Rows per table for 1 GiB of database (`pg_database_size`, indexes included):
    /// customers, orders, events, line_items. Calibrated on PostgreSQL 15: the earlier counts
    /// (1.855 and 1.755 times these) gave 3.71 and 3.51 GiB for `--gb 2`.
    fn rows_per_gb(self) -> [f64; 4] {
        let (rows, measured) = match self {
            Shape::IntegerKey => ([500_000.0, 3_600_000.0, 900_000.0, 2_500_000.0], 1.855),
            Shape::UuidKey => ([250_000.0, 600_000.0, 5_500_000.0, 600_000.0], 1.755),
        };
        rows.map(|r: f64| r / measured)
    }
}

/// What was generated.
pub struct Dataset {
    pub took: Duration,
    /// `pg_database_size`.
    pub bytes: i64,
    /// The largest table and its share of the user tables' bytes (with indexes and TOAST).
    pub largest: String,
    pub largest_share: f64,
}

const SCHEMA: &str = "
CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL, profile jsonb);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers (id),
    status text NOT NULL, amount numeric(12, 2) NOT NULL, created_at timestamptz NOT NULL,
    payload jsonb NOT NULL, note text);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE TABLE events (id uuid PRIMARY KEY, kind text NOT NULL, at timestamptz NOT NULL, body text NOT NULL);
CREATE TABLE line_items (order_id bigint NOT NULL, line_no int NOT NULL, sku text NOT NULL,
    qty int NOT NULL, price numeric(10, 2) NOT NULL, PRIMARY KEY (order_id, line_no));";

/// Creates and fills the four tables, about `gb` GB of data in `shape`.
pub async fn generate(url: &PgUrl, gb: f64, shape: Shape) -> anyhow::Result<Dataset> {
    let t = Instant::now();
    let c = url.connect().await?;
    c.batch_execute(SCHEMA).await?;
    let [customers, orders, events, items] = shape.rows_per_gb().map(|r| (r * gb).round() as i64);
    let statements = [
        format!("INSERT INTO customers SELECT g, 'user' || g || '@example.com', 'Customer ' || md5(g::text),
                 jsonb_build_object('tier', g % 5, 'tags', jsonb_build_array(md5((g * 7)::text)))
                 FROM generate_series(1, {customers}) g"),
        format!("INSERT INTO orders SELECT g, 1 + g % {customers}, (ARRAY['new','paid','shipped','done'])[1 + g % 4],
                 (g % 100000) / 100.0, now() - (g % 1000) * interval '1 hour',
                 jsonb_build_object('sku', md5(g::text), 'qty', g % 9, 'gift', g % 7 = 0, 'addr', md5((g + 1)::text)),
                 md5((g * 3)::text) || ' ' || md5((g * 5)::text) || ' ' || md5((g * 11)::text) || ' ' || md5((g * 13)::text)
                 FROM generate_series(1, {orders}) g"),
        format!("INSERT INTO events SELECT md5('e' || g)::uuid, 'k' || g % 12, now() - g * interval '1 second',
                 repeat(md5(g::text), 5) FROM generate_series(1, {events}) g"),
        format!("INSERT INTO line_items SELECT g / 3, g % 3, 'SKU-' || (g % 5000), 1 + g % 4, (g % 1000) + 0.99
                 FROM generate_series(1, {items}) g"),
    ];
    // Customers first (orders reference them), then the rest two at a time.
    c.batch_execute(&statements[0]).await?;
    let c2 = url.connect().await?;
    let (a, b) = tokio::join!(
        c.batch_execute(&statements[1]),
        c2.batch_execute(&statements[2])
    );
    a?;
    b?;
    c.batch_execute(&statements[3]).await?;
    c.batch_execute("VACUUM ANALYZE").await?;
    let row = c
        .query_one(
            "WITH t AS (SELECT relname::text AS name, pg_total_relation_size(oid) AS bytes
                          FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace)
             SELECT pg_database_size(current_database()),
                    (SELECT name FROM t ORDER BY bytes DESC LIMIT 1),
                    (SELECT max(bytes)::float8 / nullif(sum(bytes), 0) FROM t)",
            &[],
        )
        .await?;
    Ok(Dataset {
        took: t.elapsed(),
        bytes: row.get(0),
        largest: row.get(1),
        largest_share: row.get::<_, Option<f64>>(2).unwrap_or(0.0),
    })
}
