//! The facts preflight decides on, gathered once by a few catalog queries: the only part of
//! preflight that touches a database. Serialisable, so a real source's catalog can be kept as a
//! JSON fixture and the rules run on it without a server.

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::{
    PgError, ServerInfo,
    catalog::{self, Table},
    server_info,
};

/// What one server is and what the connected role may do there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerReport {
    /// `server_version_num`.
    pub version_num: i32,
    /// Major version.
    pub major: i32,
    /// `wal_level`.
    pub wal_level: String,
    /// The connected role.
    pub role: String,
    /// Whether it is a superuser.
    pub superuser: bool,
    /// Whether it has the REPLICATION attribute.
    pub replication: bool,
    /// Whether it may create schemas in the database.
    pub can_create_schema: bool,
    /// `max_connections`.
    pub max_connections: i64,
    /// Connections open now.
    pub connections_in_use: i64,
    /// Replication slots still free.
    pub free_replication_slots: i64,
    /// Whether the role may set `session_replication_role` (needed to apply without firing
    /// triggers and foreign keys out of order).
    pub can_set_replication_role: bool,
}

/// A sequence and the column that owns it, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceReport {
    /// `schema.name`.
    pub name: String,
    /// `schema.table.column` owning it (serial/identity), if any.
    pub owned_by: Option<String>,
    /// Its current value, if it has been used.
    pub last_value: Option<i64>,
}

/// An extension installed on the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extension {
    /// `extname`.
    pub name: String,
    /// `extversion`.
    pub version: String,
}

/// The target's side of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSnapshot {
    /// The server and the connected role.
    pub server: ServerReport,
    /// Every extension the target offers (`pg_available_extensions`).
    pub available_extensions: Vec<String>,
}

/// Everything preflight's rules read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The source server and the connected role.
    pub source: ServerReport,
    /// The target, when there is one (`None` for `ferry plan`, before RDS exists).
    pub target: Option<TargetSnapshot>,
    /// Every user table of the source.
    pub tables: Vec<Table>,
    /// Large objects in the source database.
    pub large_objects: i64,
    /// Extensions installed on the source, `plpgsql` left out, by name.
    pub extensions: Vec<Extension>,
    /// Every user sequence of the source, by name.
    pub sequences: Vec<SequenceReport>,
}

impl Snapshot {
    /// Reads the source and, if given, the target.
    pub async fn gather(source: &Client, target: Option<&Client>) -> Result<Self, PgError> {
        let target = match target {
            Some(t) => Some(TargetSnapshot {
                server: server(t).await?,
                available_extensions: available_extensions(t).await?,
            }),
            None => None,
        };
        Ok(Self {
            source: server(source).await?,
            target,
            tables: catalog::tables(source).await?,
            large_objects: large_objects(source).await?,
            extensions: extensions(source).await?,
            sequences: sequences(source).await?,
        })
    }

    /// The target server, if there is one.
    pub fn target_server(&self) -> Option<&ServerReport> {
        self.target.as_ref().map(|t| &t.server)
    }
}

fn query_error(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> PgError {
    move |source| PgError::Query { what, source }
}

async fn server(client: &Client) -> Result<ServerReport, PgError> {
    let info: ServerInfo = server_info(client).await?;
    let row = client
        .query_one(
            "SELECT current_user::text, r.rolsuper, r.rolreplication,
                    has_database_privilege(current_database(), 'CREATE'),
                    current_setting('max_connections')::bigint,
                    (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
                    current_setting('max_replication_slots')::bigint
                      - (SELECT count(*) FROM pg_replication_slots)
               FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(query_error("read role and limits"))?;
    let superuser: bool = row.get(1);
    // PostgreSQL 15+ can grant SET on a superuser-only parameter (RDS grants it to
    // rds_superuser members).
    let can_set = if superuser {
        true
    } else if info.major >= 15 {
        client
            .query_one(
                "SELECT has_parameter_privilege('session_replication_role', 'SET')",
                &[],
            )
            .await
            .map_err(query_error("read role and limits"))?
            .get(0)
    } else {
        false
    };
    Ok(ServerReport {
        version_num: info.version_num,
        major: info.major,
        wal_level: info.wal_level,
        role: row.get(0),
        superuser,
        replication: row.get(2),
        can_create_schema: row.get(3),
        max_connections: row.get(4),
        connections_in_use: row.get(5),
        free_replication_slots: row.get(6),
        can_set_replication_role: can_set,
    })
}

async fn large_objects(source: &Client) -> Result<i64, PgError> {
    Ok(source
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .await
        .map_err(query_error("count large objects"))?
        .get(0))
}

async fn extensions(source: &Client) -> Result<Vec<Extension>, PgError> {
    Ok(source
        .query(
            "SELECT extname::text, extversion FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1",
            &[],
        )
        .await
        .map_err(query_error("list source extensions"))?
        .iter()
        .map(|r| Extension {
            name: r.get(0),
            version: r.get(1),
        })
        .collect())
}

async fn available_extensions(target: &Client) -> Result<Vec<String>, PgError> {
    Ok(target
        .query(
            "SELECT name::text FROM pg_available_extensions ORDER BY 1",
            &[],
        )
        .await
        .map_err(query_error("list target extensions"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

async fn sequences(source: &Client) -> Result<Vec<SequenceReport>, PgError> {
    let rows = source
        .query(
            "SELECT format('%I.%I', s.schemaname, s.sequencename), s.last_value,
                    (SELECT format('%I.%I.%I', tn.nspname, tc.relname, a.attname)
                       FROM pg_depend d
                       JOIN pg_class tc ON tc.oid = d.refobjid
                       JOIN pg_namespace tn ON tn.oid = tc.relnamespace
                       JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                      WHERE d.classid = 'pg_class'::regclass
                        AND d.objid = format('%I.%I', s.schemaname, s.sequencename)::regclass
                        AND d.deptype IN ('a', 'i') LIMIT 1)
               FROM pg_sequences s
              WHERE s.schemaname NOT IN ('pg_catalog', 'information_schema', $1)
              ORDER BY 1",
            &[&catalog::FERRY_SCHEMA],
        )
        .await
        .map_err(query_error("list sequences"))?;
    Ok(rows
        .iter()
        .map(|r| SequenceReport {
            name: r.get(0),
            last_value: r.get(1),
            owned_by: r.get(2),
        })
        .collect())
}
