//! What the replicated tables look like: read from the catalogs once, used by preflight,
//! copy, capture, apply and verify alike.

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::PgError;

/// The schema Ferry creates on a server for its own objects; never replicated.
pub const FERRY_SCHEMA: &str = "ferry";

/// Quotes an identifier for SQL (`my "t"` → `"my ""t"""`).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for SQL (standard_conforming_strings on).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// How a relation stores its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TableKind {
    /// A plain table.
    Ordinary,
    /// A partitioned table: holds no rows itself; its leaves do.
    Partitioned,
    /// A leaf partition of the named top-level root (schema-qualified, quoted).
    Partition {
        /// The root's qualified name.
        root: String,
    },
    /// A partitioned table that is itself a partition: no rows, reached through its root.
    SubPartitioned {
        /// The top-level root's qualified name.
        root: String,
    },
}

/// One column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Its name (unquoted).
    pub name: String,
    /// Its type as SQL (`format_type`), e.g. `numeric(12,2)`, `public.mood[]`.
    pub type_sql: String,
    /// `GENERATED ALWAYS AS (...) STORED`: never copied, the target computes it.
    pub generated: bool,
    /// `GENERATED ALWAYS AS IDENTITY` (needs OVERRIDING SYSTEM VALUE on insert).
    pub identity_always: bool,
    /// `GENERATED ... AS IDENTITY` of either kind.
    pub identity: bool,
    /// Whether its binary COPY format is the same on any server: a built-in type, or an array
    /// of one. (Binary arrays and composites of user types carry server-specific type oids.)
    pub binary_portable: bool,
}

/// One user table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    /// The relation's oid on the server it was read from.
    pub oid: u32,
    /// Schema name (unquoted).
    pub schema: String,
    /// Table name (unquoted).
    pub name: String,
    /// Plain, partitioned or partition.
    pub kind: TableKind,
    /// Columns in order (dropped ones left out).
    pub columns: Vec<Column>,
    /// Primary-key column names in key order; empty when there is none.
    pub primary_key: Vec<String>,
    /// `relreplident`: d (default = pk), n (nothing), f (full), i (index).
    pub replica_identity: char,
    /// Whether the table is UNLOGGED (invisible to logical decoding).
    pub unlogged: bool,
    /// Planner's row estimate (`reltuples`, −1 when never analysed).
    pub estimated_rows: i64,
    /// Total size on disk, with indexes and TOAST.
    pub total_bytes: i64,
    /// Role that owns it.
    pub owner: String,
    /// Whether the connected role may create triggers on it (owner or member of the owner).
    pub can_trigger: bool,
}

impl Table {
    /// `"schema"."name"`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// `schema.name` unquoted, for reports and keys.
    pub fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// Columns whose values are copied (everything but stored generated columns).
    pub fn copy_columns(&self) -> Vec<&Column> {
        self.columns.iter().filter(|c| !c.generated).collect()
    }

    /// The quoted, comma-separated list of [`Table::copy_columns`].
    pub fn copy_column_list(&self) -> String {
        self.copy_columns()
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The COPY format for moving this table's rows between servers: `binary` when every
    /// copied column's binary form is portable (much less CPU on both servers), else `text`.
    pub fn copy_format(&self) -> &'static str {
        if self.copy_columns().iter().all(|c| c.binary_portable) {
            "binary"
        } else {
            "text"
        }
    }

    /// The quoted, comma-separated primary-key columns.
    pub fn pk_list(&self) -> String {
        self.primary_key
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Whether rows live in this relation (ordinary tables and leaf partitions).
    pub fn holds_rows(&self) -> bool {
        matches!(self.kind, TableKind::Ordinary | TableKind::Partition { .. })
    }

    /// Whether changes are captured and applied through this relation (ordinary tables and
    /// partition roots; leaves are reached through their root).
    pub fn is_capture_unit(&self) -> bool {
        matches!(self.kind, TableKind::Ordinary | TableKind::Partitioned)
    }

    /// The single integer primary-key column, if the key is exactly one integer column (the
    /// copy and the verification split such tables into key ranges).
    pub fn integer_key(&self) -> Option<&str> {
        match self.primary_key.as_slice() {
            [only] => self
                .column(only)
                .filter(|c| matches!(c.type_sql.as_str(), "integer" | "bigint" | "smallint"))
                .map(|c| c.name.as_str()),
            _ => None,
        }
    }
}

/// The columns of table `oid` among the rows of the column query, in order.
fn columns_of(column_rows: &[tokio_postgres::Row], oid: u32) -> Vec<Column> {
    column_rows
        .iter()
        .filter(|c| c.get::<_, u32>(0) == oid)
        .map(|c| {
            let generated: String = c.get(3);
            let identity: String = c.get(4);
            Column {
                name: c.get(1),
                type_sql: c.get(2),
                generated: generated == "s",
                identity_always: identity == "a",
                identity: !identity.is_empty(),
                binary_portable: c.get(5),
            }
        })
        .collect()
}

/// Reads every user table (not system schemas, not Ferry's own schema, not tables that belong
/// to an extension), ordered by schema and name.
pub async fn tables(client: &Client) -> Result<Vec<Table>, PgError> {
    let rows = client
        .query(
            "SELECT c.oid, n.nspname, c.relname, c.relkind::text, c.relispartition,
                    (SELECT format('%I.%I', rn.nspname, rc.relname)
                       FROM pg_partition_root(c.oid) r(oid)
                       JOIN pg_class rc ON rc.oid = r.oid
                       JOIN pg_namespace rn ON rn.oid = rc.relnamespace) AS root,
                    c.relreplident::text, c.relpersistence = 'u',
                    c.reltuples::bigint, pg_total_relation_size(c.oid),
                    pg_get_userbyid(c.relowner),
                    pg_has_role(current_user, c.relowner, 'MEMBER'),
                    coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord)
                                FROM pg_index i
                                CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
                                JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                               WHERE i.indrelid = c.oid AND i.indisprimary), '{}')
               FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p')
                AND n.nspname NOT IN ('pg_catalog', 'information_schema', $1)
                AND n.nspname NOT LIKE 'pg\\_%'
                AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                 WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                   AND d.deptype = 'e')
              ORDER BY n.nspname, c.relname",
            &[&FERRY_SCHEMA],
        )
        .await
        .map_err(|source| PgError::Query {
            what: "list tables",
            source,
        })?;
    let column_rows = client
        .query(
            "SELECT a.attrelid, a.attname::text, format_type(a.atttypid, a.atttypmod),
                    a.attgenerated::text, a.attidentity::text,
                    a.atttypid < 16384 AND (SELECT t.typelem = 0 OR t.typelem < 16384
                                              FROM pg_type t WHERE t.oid = a.atttypid)
               FROM pg_attribute a
               JOIN pg_class c ON c.oid = a.attrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
                AND n.nspname NOT IN ('pg_catalog', 'information_schema', $1)
              ORDER BY a.attrelid, a.attnum",
            &[&FERRY_SCHEMA],
        )
        .await
        .map_err(|source| PgError::Query {
            what: "list columns",
            source,
        })?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let oid: u32 = r.get(0);
        let kind: String = r.get(3);
        let is_partition: bool = r.get(4);
        let root: Option<String> = r.get(5);
        let columns = columns_of(&column_rows, oid);
        let replident: String = r.get(6);
        out.push(Table {
            oid,
            schema: r.get(1),
            name: r.get(2),
            kind: match (kind.as_str(), is_partition) {
                ("p", false) => TableKind::Partitioned,
                ("p", true) => TableKind::SubPartitioned {
                    root: root.unwrap_or_default(),
                },
                (_, true) => TableKind::Partition {
                    root: root.unwrap_or_default(),
                },
                _ => TableKind::Ordinary,
            },
            columns,
            primary_key: r.get(12),
            replica_identity: replident.chars().next().unwrap_or('d'),
            unlogged: r.get(7),
            estimated_rows: r.get(8),
            total_bytes: r.get(9),
            owner: r.get(10),
            can_trigger: r.get(11),
        });
    }
    Ok(out)
}
