//! The plan as markdown, for a person.

use std::fmt::Write;

use crate::build::{Equivalence, Issue, Plan};

fn money(v: Option<f64>) -> String {
    v.map_or_else(|| "not priced".into(), |v| format!("${v:.2}"))
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn issues(out: &mut String, title: &str, list: &[Issue]) {
    let _ = writeln!(out, "## {title} ({})\n", list.len());
    if list.is_empty() {
        let _ = writeln!(out, "None.\n");
        return;
    }
    for i in list {
        let subject = i
            .subject
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "- **{}**{subject}: {} Fix: {}",
            i.code, i.message, i.fix
        );
    }
    out.push('\n');
}

/// Renders the plan: one function per `##` section.
pub fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    heading(&mut out, plan);
    cost(&mut out, plan);
    issues(&mut out, "Blockers", &plan.blockers);
    mapping(&mut out, plan);
    issues(&mut out, "Warnings", &plan.warnings);
    inventory(&mut out, &plan.inventory);
    database(&mut out, &plan.inventory);
    spec_and_prices(&mut out, plan);
    out
}

/// The title and where the prices come from.
fn heading(out: &mut String, plan: &Plan) {
    let inv = &plan.inventory;
    let _ = writeln!(out, "# Ferry plan: {}\n", plan.app);
    let _ = writeln!(
        out,
        "Heroku region {}, stack {}. Prices as of {} ({} for AWS, Fargate {}); see Prices below.\n",
        inv.app.region.as_deref().unwrap_or("?"),
        inv.app.stack.as_deref().unwrap_or("?"),
        plan.prices.as_of,
        plan.prices.aws_region,
        plan.prices.architecture
    );
}

/// `## Monthly cost`: both sides' totals of the priced parts.
fn cost(out: &mut String, plan: &Plan) {
    let t = &plan.totals;
    let _ = writeln!(out, "## Monthly cost\n");
    let _ = writeln!(out, "| | Heroku | AWS |\n|---|---:|---:|");
    let _ = writeln!(
        out,
        "| priced parts | ${:.2} | ${:.2} |",
        t.heroku_monthly, t.aws_monthly
    );
    let _ = writeln!(
        out,
        "| parts not priced | {} | {} |\n",
        t.heroku_not_priced.len(),
        t.aws_not_priced.len()
    );
    if !t.aws_not_priced.is_empty() {
        let _ = writeln!(
            out,
            "Not priced on AWS (usage-based or no mapping): {}.\n",
            t.aws_not_priced.join("; ")
        );
    }
}

/// `## Mapping`: a row per Heroku part, and the add-ons a person must decide.
fn mapping(out: &mut String, plan: &Plan) {
    let _ = writeln!(out, "## Mapping\n");
    let _ = writeln!(
        out,
        "| Heroku | AWS | Match | Heroku $/mo | AWS $/mo | Notes |\n|---|---|---|---:|---:|---|"
    );
    for m in &plan.mappings {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            cell(&m.heroku),
            cell(&m.aws),
            match m.equivalence {
                Equivalence::Direct => "direct",
                Equivalence::Replace => "replace",
                Equivalence::KeepVendor => "keep vendor",
                Equivalence::None => "**none**",
            },
            money(m.heroku_monthly),
            money(m.aws_monthly),
            cell(&m.notes.join("; "))
        );
    }
    out.push('\n');
    let no_equivalent: Vec<&str> = plan
        .mappings
        .iter()
        .filter(|m| {
            m.category == "add-on"
                && matches!(m.equivalence, Equivalence::None | Equivalence::KeepVendor)
        })
        .map(|m| m.heroku.as_str())
        .collect();
    if !no_equivalent.is_empty() {
        let _ = writeln!(
            out,
            "Add-ons without a direct AWS equivalent (decide each before cutover): {}.\n",
            no_equivalent.join("; ")
        );
    }
}

/// `## Inventory`: process types, add-ons, domains and config var names.
fn inventory(out: &mut String, inv: &crate::inventory::Inventory) {
    let _ = writeln!(out, "## Inventory\n");
    let _ = writeln!(out, "Process types:\n");
    for p in &inv.processes {
        let _ = writeln!(
            out,
            "- {}: {} × {} `{}`{}{}",
            p.process_type,
            p.quantity,
            p.size.as_deref().unwrap_or("-"),
            p.command,
            if p.in_formation {
                ""
            } else {
                " (Procfile only)"
            },
            if p.in_procfile == Some(false) {
                " (not in the Procfile)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(out, "\nAdd-ons:\n");
    for a in &inv.addons {
        let _ = writeln!(
            out,
            "- {} {}:{}{}{}",
            a.name,
            a.service,
            a.plan,
            if a.attached_as.is_empty() {
                String::new()
            } else {
                format!(", attached as {}", a.attached_as.join(", "))
            },
            a.billed_monthly
                .map(|v| format!(", billed ${v:.2}/month"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        out,
        "\nDomains: {}\n",
        inv.domains
            .iter()
            .map(|d| format!("{} ({})", d.hostname, d.kind))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        out,
        "Config vars ({}, names only): {}\n",
        inv.config_vars.len(),
        inv.config_vars
            .iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// The database line of the inventory: what the source-only preflight read, or why not.
fn database(out: &mut String, inv: &crate::inventory::Inventory) {
    match (&inv.database, &inv.database_unavailable) {
        (Some(db), _) => {
            let r = &db.preflight;
            let _ = writeln!(
                out,
                "Database: PostgreSQL {} ({}), {:.1} MB, {} tables, {} sequences, {} large objects; extensions: {}; capture mode {}; connections {} of {} in use.\n",
                db.version,
                db.plan.as_deref().unwrap_or("plan unknown"),
                db.size_bytes as f64 / 1e6,
                r.tables.len(),
                r.sequences.len(),
                r.large_objects,
                if r.extensions.is_empty() {
                    "none".to_string()
                } else {
                    r.extensions
                        .iter()
                        .map(|(n, v)| format!("{n} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                r.capture
                    .map(|c| serde_json::to_value(c)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default())
                    .unwrap_or_else(|| "none possible".into()),
                r.source.connections_in_use,
                r.source.max_connections
            );
        }
        (None, Some(reason)) => {
            let _ = writeln!(out, "Database: not analysed ({reason}).\n");
        }
        (None, None) => {}
    }
}

/// `## migration.json` (the fields left to fill in) and `## Prices` (date and sources).
fn spec_and_prices(out: &mut String, plan: &Plan) {
    let _ = writeln!(out, "## migration.json\n");
    let _ = writeln!(
        out,
        "Written next to this file. `ferry validate` refuses it until these fields are filled in:\n"
    );
    for f in &plan.fill_in {
        let _ = writeln!(out, "- `{}`: {}", f.path, f.what);
    }
    let _ = writeln!(out, "\n## Prices\n");
    let _ = writeln!(out, "As of {}. {}\n", plan.prices.as_of, plan.prices.caveat);
    for s in &plan.prices.sources {
        let _ = writeln!(out, "- {s}");
    }
}
