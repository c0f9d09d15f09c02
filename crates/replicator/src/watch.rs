//! Schema freeze watch. DDL is not replicated, and stock Heroku allows no event trigger to
//! catch it, so the worker compares a fingerprint of every replicated table's columns on both
//! sides; a difference pauses apply until the target matches again or a person says so.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use crate::error::{ReplError, ReplResult};

/// `schema.table` → its columns as `name:type:notnull`, in order.
pub async fn fingerprint(client: &Client) -> ReplResult<BTreeMap<String, String>> {
    let rows = client
        .query(
            "SELECT format('%s.%s', n.nspname, c.relname),
                    string_agg(format('%s:%s:%s', a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull),
                               ',' ORDER BY a.attnum)
               FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
              WHERE c.relkind IN ('r', 'p')
                AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'ferry')
                AND n.nspname NOT LIKE 'pg\\_%'
              GROUP BY 1",
            &[],
        )
        .await
        .map_err(ReplError::sql("fingerprint the schema"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The tables whose columns differ between source and target, or that exist on one side only.
pub async fn changed_tables(source: &Client, target: &Client) -> ReplResult<Vec<String>> {
    let (a, b) = tokio::try_join!(fingerprint(source), fingerprint(target))?;
    let mut out: Vec<String> = a
        .iter()
        .filter(|(t, cols)| b.get(*t) != Some(cols))
        .map(|(t, _)| t.clone())
        .collect();
    out.extend(b.keys().filter(|t| !a.contains_key(*t)).cloned());
    out.sort();
    Ok(out)
}
