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
        run_marked(&client, stmt).await?;
    }
    Ok(())
}
