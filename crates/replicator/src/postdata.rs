//! Restores post-data (keys, indexes, constraints, triggers) after the copy with several
//! sessions: each table's key and index builds run in parallel with other tables', the rest
//! follows in the dump's order. Every statement commits with its own marker, so a restarted
//! worker skips what is built.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use ferry_pg::PgUrl;
use tokio_postgres::Client;

use crate::{
    error::{ReplError, ReplResult},
    schema::{PostData, statement_key},
};

async fn session(target: &PgUrl, preamble: &[String]) -> ReplResult<Client> {
    let client = target.connect().await?;
    for stmt in preamble {
        // A newer pg_dump may set parameters an older server lacks; the rest still apply.
        if let Err(e) = client.batch_execute(stmt).await {
            tracing::debug!(error = %ferry_pg::describe(&e), "skipping a dump setting");
        }
    }
    client
        .batch_execute(
            "SET maintenance_work_mem = '128MB'; SET max_parallel_maintenance_workers = 0",
        )
        .await
        .map_err(ReplError::sql("set up an index-build session"))?;
    Ok(client)
}

async fn run_marked(client: &Client, stmt: &str) -> ReplResult<()> {
    let key = statement_key(stmt);
    let done = client
        .query_opt("SELECT 1 FROM ferry.post_done WHERE key = $1", &[&key])
        .await
        .map_err(ReplError::sql("read post-data markers"))?
        .is_some();
    if done {
        return Ok(());
    }
    let script =
        format!("BEGIN;\n{stmt}\n;\nINSERT INTO ferry.post_done (key) VALUES ('{key}');\nCOMMIT;");
    if let Err(e) = client.batch_execute(&script).await {
        let _ = client.batch_execute("ROLLBACK").await;
        let first_line = stmt.lines().next().unwrap_or("");
        return Err(ReplError::Sql {
            what: format!("restore post-data `{first_line}`"),
            source: e,
        });
    }
    Ok(())
}

/// Runs `post` on `target` with `parallelism` sessions; `sizes` (bytes by `schema.name`)
/// starts the largest tables first.
pub async fn restore(
    target: &PgUrl,
    post: &PostData,
    sizes: &HashMap<String, i64>,
    parallelism: usize,
) -> ReplResult<()> {
    let mut groups = post.per_table.clone();
    groups.sort_by_key(|(t, _)| std::cmp::Reverse(sizes.get(t).copied().unwrap_or(0)));
    let queue = Arc::new(Mutex::new(VecDeque::from(groups)));
    let mut tasks = Vec::new();
    for _ in 0..parallelism.max(1) {
        let (queue, target, preamble) = (queue.clone(), target.clone(), post.preamble.clone());
        tasks.push(tokio::spawn(async move {
            let client = session(&target, &preamble).await?;
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some((_, stmts)) = next else {
                    return Ok::<(), ReplError>(());
                };
                for stmt in &stmts {
                    run_marked(&client, stmt).await?;
                }
            }
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| ReplError::State(format!("index-build session panicked: {e}")))??;
    }
    let client = session(target, &post.preamble).await?;
    for stmt in &post.dependent {
        run_marked(&client, &not_valid(stmt)).await?;
    }
    Ok(())
}

/// A foreign key is added `NOT VALID`: a copy resumed after a restart reads its tables at
/// different snapshots, so a child row may arrive before the parent row its change log still
/// holds. New writes are checked at once; existing rows are validated once streaming has
/// caught up ([`validate_foreign_keys`]).
pub fn not_valid(stmt: &str) -> String {
    let trimmed = stmt.trim_end().trim_end_matches(';').trim_end();
    if trimmed.starts_with("ALTER TABLE")
        && trimmed.contains(" FOREIGN KEY (")
        && !trimmed.ends_with("NOT VALID")
    {
        format!("{trimmed} NOT VALID;")
    } else {
        stmt.to_string()
    }
}

/// Validates the target's foreign keys that are `NOT VALID` there but valid on the source.
/// Returns how many it validated. Idempotent.
pub async fn validate_foreign_keys(source: &Client, target: &Client) -> ReplResult<usize> {
    const PENDING: &str = "SELECT n.nspname, c.relname, k.conname
                             FROM pg_constraint k
                             JOIN pg_class c ON c.oid = k.conrelid
                             JOIN pg_namespace n ON n.oid = c.relnamespace
                            WHERE k.contype = 'f' AND NOT k.convalidated
                              AND n.nspname <> 'ferry'";
    let rows = target
        .query(PENDING, &[])
        .await
        .map_err(ReplError::sql("list foreign keys to validate"))?;
    let invalid_on_source: std::collections::HashSet<(String, String, String)> = source
        .query(PENDING, &[])
        .await
        .map_err(ReplError::sql("list the source's unvalidated foreign keys"))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut n = 0;
    for r in rows {
        let key: (String, String, String) = (r.get(0), r.get(1), r.get(2));
        if invalid_on_source.contains(&key) {
            continue;
        }
        let sql = format!(
            "ALTER TABLE {}.{} VALIDATE CONSTRAINT {}",
            ferry_pg::catalog::quote_ident(&key.0),
            ferry_pg::catalog::quote_ident(&key.1),
            ferry_pg::catalog::quote_ident(&key.2)
        );
        target
            .batch_execute(&sql)
            .await
            .map_err(ReplError::sql(format!(
                "validate foreign key {} of {}.{}",
                key.2, key.0, key.1
            )))?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::not_valid;

    #[test]
    fn foreign_keys_are_added_not_valid_and_nothing_else_changes() {
        let fk = "ALTER TABLE ONLY public.orders\n    ADD CONSTRAINT orders_c_fkey FOREIGN KEY (c) REFERENCES public.c(id) ON DELETE CASCADE;";
        assert!(not_valid(fk).ends_with("ON DELETE CASCADE NOT VALID;"));
        assert_eq!(not_valid(&not_valid(fk)), not_valid(fk));
        let trigger =
            "CREATE TRIGGER t AFTER INSERT ON public.a FOR EACH ROW EXECUTE FUNCTION f();";
        assert_eq!(not_valid(trigger), trigger);
        let check = "ALTER TABLE ONLY public.a\n    ADD CONSTRAINT a_check CHECK (x > 0);";
        assert_eq!(not_valid(check), check);
    }
}
