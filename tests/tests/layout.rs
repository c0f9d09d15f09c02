//! The code's shape: no module of a crate imports another that imports it back, directly or
//! through others (a circle makes both halves change together and hides which one owns a
//! name). A module's references are its `crate::<module>` paths and the top-level names of its
//! `use crate::{…}` groups, comments and the test module left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The sibling modules `text` (one module's source) refers to.
fn references(text: &str) -> BTreeSet<String> {
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or_default()
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("//") {
                ""
            } else {
                l.split("//").next().unwrap_or_default()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group (nested braces belong to them).
            let (mut depth, mut start) = (0usize, 0usize);
            for (j, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.insert(ident(group[start..j].trim()));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(group[start..j].trim()));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|n| !n.is_empty());
    out
}

/// Each module of the crate at `src` (a top-level file, or a directory's `mod.rs`) and the
/// sibling modules it refers to.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut mods = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("read src") {
        let path = entry.expect("entry").path();
        let stem = |p: &Path| {
            p.file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default()
        };
        let (name, file) = if path.is_dir() {
            (stem(&path), path.join("mod.rs"))
        } else if path.extension().is_some_and(|e| e == "rs") {
            (stem(&path), path.clone())
        } else {
            continue;
        };
        if name == "lib" || name == "main" || !file.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read module");
        mods.insert(name, references(&text));
    }
    let names: BTreeSet<String> = mods.keys().cloned().collect();
    mods.into_iter()
        .map(|(m, refs)| {
            let refs = refs
                .into_iter()
                .filter(|r| names.contains(r) && *r != m)
                .collect();
            (m, refs)
        })
        .collect()
}

/// Modules that reach themselves again through the graph.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<String> = graph[from].iter().cloned().collect();
        while let Some(m) = todo.pop() {
            if seen.insert(m.clone()) {
                todo.extend(graph[&m].iter().cloned());
            }
        }
        seen
    };
    graph
        .keys()
        .filter(|m| reach(m).contains(*m))
        .map(|m| {
            let back: Vec<&String> = graph[m].iter().filter(|n| reach(n).contains(m)).collect();
            format!("{m} → {back:?} → … → {m}")
        })
        .collect()
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let crates = ferry_tests::repo_root().join("crates");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&crates).expect("crates") {
        let src = entry.expect("crate").path().join("src");
        if src.is_dir() {
            for c in circles(&module_graph(&src)) {
                found.push(format!("{}: {c}", src.display()));
            }
        }
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn the_circle_check_sees_a_circle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(m, r)| (m.to_string(), r.into_iter().map(String::from).collect()))
    .collect();
    let found = circles(&graph);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found.iter().all(|c| !c.starts_with('d')), "{found:?}");
    assert_eq!(
        references(
            "use crate::{Conn, copy::{self, dump}, glob};\n// crate::ops\nfn f() { crate::sync::x(); }"
        ),
        ["Conn", "copy", "glob", "sync"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}
