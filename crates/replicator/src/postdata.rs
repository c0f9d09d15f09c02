//! Restores post-data (keys, indexes, constraints, triggers) with several sessions: each
//! table's key and index builds start as soon as its copy is done, while the other tables are
//! still copied ([`build_as_copied`]), in parallel with other tables' builds; after the copy,
//! [`restore`] builds whatever is left and runs the rest in the dump's order. Every statement
//! commits with its own marker, so a restarted worker skips what is built.

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

async fn session(target: &PgUrl, preamble: &[String], sessions: usize) -> ReplResult<Client> {
    let client = target.connect().await?;
    for stmt in preamble {
        // A newer pg_dump may set parameters an older server lacks; the rest still apply.
        if let Err(e) = client.batch_execute(stmt).await {
            tracing::debug!(error = %ferry_pg::describe(&e), "skipping a dump setting");
        }
    }
    let row = client
        .query_one(
            "SELECT pg_size_bytes(current_setting('maintenance_work_mem')) / 1024,
                    pg_size_bytes(current_setting('shared_buffers')) / 1024",
            &[],
        )
        .await
        .map_err(ReplError::sql("read the target's memory settings"))?;
    let kb = build_memory_kb(row.get(0), row.get(1), sessions);
    client
        .batch_execute(&format!(
            "SET maintenance_work_mem = '{kb}kB'; SET max_parallel_maintenance_workers = 0"
        ))
        .await
        .map_err(ReplError::sql("set up an index-build session"))?;
    Ok(client)
}

/// Sort memory for each of `sessions` index-build sessions, in kB: the target's shared
/// buffers shared among them (RDS sizes `shared_buffers` at a quarter of the instance's
/// memory, so the builds together stay within another quarter), from 128 MB to 2 GB, or the
/// server's own `maintenance_work_mem` where an operator set it higher (RDS's default grows
/// with the instance: lowering it would slow the builds). A sort that fits sorts in memory;
/// one that does not spills to disk: a bigint key of 3.9 million rows built here in 1.7 s
/// spilled at 128 MB, 0.8 s in memory.
fn build_memory_kb(own_kb: i64, shared_buffers_kb: i64, sessions: usize) -> i64 {
    const FLOOR_KB: i64 = 128 * 1024;
    const CEILING_KB: i64 = 2 * 1024 * 1024;
    let share = shared_buffers_kb / sessions.max(1) as i64;
    own_kb.max(share.clamp(FLOOR_KB, CEILING_KB))
}

/// Gathers the planner's statistics on every copied table and partitioned table (autovacuum
/// never analyses a partitioned table; analysing one samples its whole tree and each
/// partition in it, so partitions are not named again): without them the target plans the
/// app's queries blind until autovacuum's first pass. Idempotent; a restarted worker runs it
/// again.
pub async fn analyse(target: &Client, tables: &[ferry_pg::catalog::Table]) -> ReplResult<()> {
    use ferry_pg::catalog::TableKind;
    let names: Vec<String> = tables
        .iter()
        .filter(|t| matches!(t.kind, TableKind::Ordinary | TableKind::Partitioned))
        .map(|t| t.qualified())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    target
        .batch_execute(&format!("ANALYZE {}", names.join(", ")))
        .await
        .map_err(ReplError::sql("analyse the copied tables"))
}

async fn set_workers(client: &Client, workers: usize) -> ReplResult<()> {
    client
        .batch_execute(&format!("SET max_parallel_maintenance_workers = {workers}"))
        .await
        .map_err(ReplError::sql(
            "set an index-build session's parallel workers",
        ))
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

/// One table's key and index builds, with the parallel workers each build may use.
#[derive(Debug, Clone, PartialEq)]
struct Group {
    table: String,
    statements: Vec<String>,
    workers: usize,
}

/// The per-table groups, largest table first. Each session builds its indexes alone
/// (`max_parallel_maintenance_workers = 0`): the sessions already fill the cores. The one
/// exception is a table so large that its builds outlast all the other tables' builds shared
/// among the other sessions: those sessions would then sit idle while it builds alone, so its
/// builds get their cores as parallel workers instead (`parallelism - 1`; PostgreSQL sorts
/// btree builds in parallel). One uuid key of 11 million rows here: 8.0-9.2 s alone, 4.8 s
/// with one worker.
fn schedule(post: &PostData, sizes: &HashMap<String, i64>, parallelism: usize) -> VecDeque<Group> {
    let size = |t: &str| sizes.get(t).copied().unwrap_or(0).max(0);
    let mut groups: Vec<Group> = post
        .per_table
        .iter()
        .map(|(table, statements)| Group {
            table: table.clone(),
            statements: statements.clone(),
            workers: 0,
        })
        .collect();
    groups.sort_by_key(|g| std::cmp::Reverse(size(&g.table)));
    let others = parallelism.max(1) - 1;
    if let Some((first, rest)) = groups.split_first_mut() {
        let rest_bytes: i64 = rest.iter().map(|g| size(&g.table)).sum();
        let first_bytes = size(&first.table);
        if others > 0 && first_bytes > 0 && first_bytes.saturating_mul(others as i64) >= rest_bytes
        {
            first.workers = others;
        }
    }
    groups.into()
}

/// Builds one table's keys and indexes on `client`, each statement with its marker.
async fn build(client: &Client, group: &Group) -> ReplResult<()> {
    set_workers(client, group.workers).await?;
    for stmt in &group.statements {
        run_marked(client, stmt).await?;
    }
    set_workers(client, 0).await
}

/// While the copy runs: builds the keys and indexes of each table named on `finished` (the
/// copy names a table once its last chunk is in), with up to `parallelism` sessions, opened
/// on first use. Returns when `finished` closes and every build it asked for is done.
/// [`restore`] later skips what this built.
pub async fn build_as_copied(
    target: &PgUrl,
    post: &PostData,
    sizes: &HashMap<String, i64>,
    parallelism: usize,
    finished: tokio::sync::mpsc::UnboundedReceiver<String>,
) -> ReplResult<()> {
    let groups: HashMap<String, Group> = schedule(post, sizes, parallelism)
        .into_iter()
        .map(|g| (g.table.clone(), g))
        .collect();
    let (groups, finished) = (
        Arc::new(groups),
        Arc::new(tokio::sync::Mutex::new(finished)),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..parallelism.max(1) {
        let (groups, finished) = (groups.clone(), finished.clone());
        let (target, preamble) = (target.clone(), post.preamble.clone());
        tasks.spawn(async move {
            let mut client = None;
            loop {
                let Some(table) = finished.lock().await.recv().await else {
                    return Ok::<(), ReplError>(());
                };
                let Some(group) = groups.get(&table) else {
                    continue;
                };
                if client.is_none() {
                    client = Some(session(&target, &preamble, parallelism).await?);
                }
                if let Some(c) = &client {
                    build(c, group).await?;
                }
            }
        });
    }
    // The first failure stops the other build sessions at once and is reported then, not
    // when the copy ends and closes `finished`; the engine then stops the copy too.
    while let Some(joined) = tasks.join_next().await {
        let failed = match joined {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(e) => ReplError::State(format!("index-build session panicked: {e}")),
        };
        tasks.abort_all();
        return Err(failed);
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
    let queue = Arc::new(Mutex::new(schedule(post, sizes, parallelism)));
    let mut tasks = Vec::new();
    for _ in 0..parallelism.max(1) {
        let (queue, target, preamble) = (queue.clone(), target.clone(), post.preamble.clone());
        tasks.push(tokio::spawn(async move {
            let client = session(&target, &preamble, parallelism).await?;
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some(group) = next else {
                    return Ok::<(), ReplError>(());
                };
                build(&client, &group).await?;
            }
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| ReplError::State(format!("index-build session panicked: {e}")))??;
    }
    let client = session(target, &post.preamble, parallelism).await?;
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
    use std::collections::HashMap;

    use super::{build_memory_kb, not_valid, schedule};
    use crate::schema::PostData;

    fn post(tables: &[&str]) -> PostData {
        PostData {
            preamble: Vec::new(),
            per_table: tables
                .iter()
                .map(|t| (t.to_string(), vec![format!("CREATE INDEX ON {t} (a);")]))
                .collect(),
            dependent: Vec::new(),
        }
    }

    fn plan(sizes: &[(&str, i64)], parallelism: usize) -> Vec<(String, usize)> {
        let names: Vec<&str> = sizes.iter().map(|(t, _)| *t).collect();
        let sizes: HashMap<String, i64> = sizes.iter().map(|(t, b)| (t.to_string(), *b)).collect();
        schedule(&post(&names), &sizes, parallelism)
            .into_iter()
            .map(|g| (g.table, g.workers))
            .collect()
    }

    #[test]
    fn build_memory_shares_the_shared_buffers_within_bounds_and_never_lowers_the_servers_own() {
        const MB: i64 = 1024;
        // PostgreSQL's defaults (64 MB, 128 MB shared buffers): the floor.
        assert_eq!(build_memory_kb(64 * MB, 128 * MB, 2), 128 * MB);
        // A 4 GB RDS instance (1 GB of shared buffers), two sessions: half each.
        assert_eq!(build_memory_kb(64 * MB, 1024 * MB, 2), 512 * MB);
        // A 256 GB one: the ceiling, unless the server's own setting is above it.
        assert_eq!(build_memory_kb(256 * MB, 64 * 1024 * MB, 4), 2048 * MB);
        assert_eq!(build_memory_kb(4000 * MB, 64 * 1024 * MB, 4), 4000 * MB);
        // An operator's larger setting stands.
        assert_eq!(build_memory_kb(1024 * MB, 128 * MB, 2), 1024 * MB);
        // No sessions is taken as one.
        assert_eq!(build_memory_kb(0, 512 * MB, 0), 512 * MB);
    }

    #[test]
    fn only_a_table_that_outlasts_the_rest_gets_the_idle_sessions_as_workers() {
        let dominant = [("s.small", 10), ("s.big", 80), ("s.mid", 30)];
        assert_eq!(
            plan(&dominant, 2),
            [
                ("s.big".into(), 1),
                ("s.mid".into(), 0),
                ("s.small".into(), 0)
            ],
            "largest first; 80 bytes outlast 40 in one other session"
        );
        assert_eq!(
            plan(&dominant, 4)[0],
            ("s.big".into(), 3),
            "40 bytes among 3 sessions"
        );
        let even = [("s.a", 50), ("s.b", 40), ("s.c", 30)];
        assert!(
            plan(&even, 2).iter().all(|(_, w)| *w == 0),
            "50 bytes do not outlast 70 in the other session"
        );
        assert!(
            plan(&dominant, 1).iter().all(|(_, w)| *w == 0),
            "one session"
        );
        assert!(
            plan(&[("s.a", 0), ("s.b", 0)], 2)
                .iter()
                .all(|(_, w)| *w == 0),
            "sizes unknown"
        );
        assert_eq!(plan(&[("s.only", 5)], 3), [("s.only".into(), 2)]);
    }

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
