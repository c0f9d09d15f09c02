//! Primary keys carried as JSON arrays (the trigger log's typed values, logical decoding's
//! text, the applier's batches, Verify's canonical texts), turned back into SQL.

use ferry_pg::catalog::Table;

use crate::error::{ReplError, ReplResult};

/// The key columns of the JSON array `json` (a jsonb SQL expression), each cast to its
/// column's type: `(json->>0)::bigint, (json->>1)::text, …`.
pub fn typed(t: &Table, json: &str) -> ReplResult<Vec<String>> {
    t.primary_key
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let col = t.column(name).ok_or_else(|| {
                ReplError::State(format!(
                    "primary-key column {name} of {} not found",
                    t.display_name()
                ))
            })?;
            Ok(format!("({json}->>{i})::{}", col.type_sql))
        })
        .collect()
}

/// The canonical text of the key in the JSON array `json`: each value through its column's
/// type and back to text, so `[7]` and `["7"]` are the same key (see
/// [`crate::verify::key_text`], the same form read from a row).
pub fn canonical(t: &Table, json: &str) -> ReplResult<String> {
    let texts: Vec<String> = typed(t, json)?
        .into_iter()
        .map(|e| format!("{e}::text"))
        .collect();
    Ok(format!(
        "pg_catalog.jsonb_build_array({})::text",
        texts.join(", ")
    ))
}
