//! The app's privileges, carried from the source to its role on the target.
//!
//! The schema reaches the target without owners or privileges (the login that restores it owns
//! every object, as on RDS where Ferry logs in as the master user). An app that logs in on RDS
//! as a role of its own would then read nothing after the cutover. So Ferry reads what the
//! app's role may do on the source — on Heroku it owns its tables and may do everything — and
//! grants the same on the target to the role the app will use there, then checks it with
//! `has_*_privilege` before the cutover gate.

use std::collections::BTreeSet;

use tokio_postgres::Client;

use crate::{PgError, catalog::quote_ident};

/// Table privileges PostgreSQL knows (MAINTAIN, 17+, is left out: the app never needs it).
pub const TABLE_PRIVILEGES: [&str; 7] = [
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
];
/// Sequence privileges.
pub const SEQUENCE_PRIVILEGES: [&str; 3] = ["USAGE", "SELECT", "UPDATE"];
/// Schema privileges.
pub const SCHEMA_PRIVILEGES: [&str; 2] = ["USAGE", "CREATE"];

/// One object and what the role may do with it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    /// `TABLE`, `SEQUENCE` or `SCHEMA`.
    pub kind: &'static str,
    /// The object, quoted (`"public"."orders"`).
    pub object: String,
    /// Privileges, in the order of the lists above.
    pub privileges: Vec<&'static str>,
}

impl Grant {
    /// The GRANT statement giving `privileges` on the object to `role`.
    pub fn statement(&self, role: &str) -> String {
        let on = match self.kind {
            "SCHEMA" => format!("SCHEMA {}", self.object),
            "SEQUENCE" => format!("SEQUENCE {}", self.object),
            _ => format!("TABLE {}", self.object),
        };
        format!(
            "GRANT {} ON {on} TO {}",
            self.privileges.join(", "),
            quote_ident(role)
        )
    }
}

fn query_error(what: &'static str) -> impl Fn(tokio_postgres::Error) -> PgError {
    move |source| PgError::Query { what, source }
}

/// What `role` may do on the source with the schemas, tables and sequences of `schemas`
/// (Ferry's own schema left out). Objects the role may not touch at all are left out.
pub async fn read(client: &Client, role: &str, schemas: &[String]) -> Result<Vec<Grant>, PgError> {
    let rows = client
        .query(
            "SELECT kind, object, privileges FROM (
               SELECT 'SCHEMA' AS kind, quote_ident(n.nspname) AS object,
                      ARRAY(SELECT p FROM unnest($3::text[]) p
                             WHERE has_schema_privilege($1, n.oid, p)) AS privileges
                 FROM pg_namespace n WHERE n.nspname = ANY($2)
               UNION ALL
               SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
                      quote_ident(n.nspname) || '.' || quote_ident(c.relname),
                      ARRAY(SELECT p FROM unnest(CASE c.relkind WHEN 'S' THEN $5::text[]
                                                                 ELSE $4::text[] END) p
                             WHERE CASE c.relkind WHEN 'S' THEN has_sequence_privilege($1, c.oid, p)
                                                  ELSE has_table_privilege($1, c.oid, p) END)
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = ANY($2) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
             ) o WHERE cardinality(privileges) > 0 ORDER BY 1, 2",
            &[
                &role,
                &schemas,
                &SCHEMA_PRIVILEGES.to_vec(),
                &TABLE_PRIVILEGES.to_vec(),
                &SEQUENCE_PRIVILEGES.to_vec(),
            ],
        )
        .await
        .map_err(query_error("read the app role's privileges"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let kind = match r.get::<_, &str>(0) {
                "SCHEMA" => "SCHEMA",
                "SEQUENCE" => "SEQUENCE",
                _ => "TABLE",
            };
            let have: BTreeSet<String> = r.get::<_, Vec<String>>(2).into_iter().collect();
            let all: &[&'static str] = match kind {
                "SCHEMA" => &SCHEMA_PRIVILEGES,
                "SEQUENCE" => &SEQUENCE_PRIVILEGES,
                _ => &TABLE_PRIVILEGES,
            };
            Grant {
                kind,
                object: r.get(1),
                privileges: all.iter().copied().filter(|p| have.contains(*p)).collect(),
            }
        })
        .collect())
}

/// Whether `role` exists on the server.
pub async fn role_exists(client: &Client, role: &str) -> Result<bool, PgError> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)",
            &[&role],
        )
        .await
        .map_err(query_error("look up the app role"))?
        .get(0))
}

/// What of `grants` `role` may not do on the target: `"SELECT on \"public\".\"orders\""`
/// for each privilege missing, and each object the target does not have.
pub async fn missing(
    client: &Client,
    role: &str,
    grants: &[Grant],
) -> Result<Vec<String>, PgError> {
    let mut out = Vec::new();
    for g in grants {
        let sql = match g.kind {
            "SCHEMA" => {
                "SELECT p, has_schema_privilege($1, n.oid, p)
                   FROM pg_namespace n, unnest($3::text[]) p
                  WHERE quote_ident(n.nspname) = $2"
            }
            "SEQUENCE" => {
                "SELECT p, has_sequence_privilege($1, c.oid, p)
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
                        unnest($3::text[]) p
                  WHERE quote_ident(n.nspname) || '.' || quote_ident(c.relname) = $2"
            }
            _ => {
                "SELECT p, has_table_privilege($1, c.oid, p)
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
                        unnest($3::text[]) p
                  WHERE quote_ident(n.nspname) || '.' || quote_ident(c.relname) = $2"
            }
        };
        let privileges: Vec<&str> = g.privileges.clone();
        let rows = client
            .query(sql, &[&role, &g.object, &privileges])
            .await
            .map_err(query_error("check the app role's privileges on the target"))?;
        if rows.is_empty() {
            out.push(format!(
                "{} {} does not exist on the target",
                g.kind.to_lowercase(),
                g.object
            ));
        }
        for r in rows.iter().filter(|r| !r.get::<_, bool>(1)) {
            out.push(format!("{} on {}", r.get::<_, &str>(0), g.object));
        }
    }
    Ok(out)
}

/// Grants `grants` to `role` on the target, in one transaction; returns the statements run.
pub async fn apply(client: &mut Client, role: &str, grants: &[Grant]) -> Result<usize, PgError> {
    let tx = client
        .transaction()
        .await
        .map_err(query_error("begin the grants"))?;
    for g in grants {
        tx.batch_execute(&g.statement(role))
            .await
            .map_err(query_error(
                "grant the app role its privileges on the target",
            ))?;
    }
    tx.commit()
        .await
        .map_err(query_error("commit the grants"))?;
    Ok(grants.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_quote_the_role_and_name_the_object_kind() {
        let g = Grant {
            kind: "TABLE",
            object: "\"public\".\"Orders\"".into(),
            privileges: vec!["SELECT", "INSERT"],
        };
        assert_eq!(
            g.statement("app\"; DROP ROLE x; --"),
            "GRANT SELECT, INSERT ON TABLE \"public\".\"Orders\" TO \"app\"\"; DROP ROLE x; --\""
        );
        let s = Grant {
            kind: "SCHEMA",
            object: "\"sales\"".into(),
            privileges: vec!["USAGE"],
        };
        assert_eq!(
            s.statement("app"),
            "GRANT USAGE ON SCHEMA \"sales\" TO \"app\""
        );
    }
}
