//! A list of problems found in user input, each naming where it is and what to do.

use std::fmt;

/// One problem in user input: a JSON path (`traffic.steps[2]`) and what is wrong / what to do.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// Where the problem is, as a JSON path from the document root (`$` for the root).
    pub path: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

/// Longest path kept in a problem (characters).
const MAX_PATH: usize = 200;
/// Longest message kept in a problem (characters).
const MAX_MESSAGE: usize = 1_000;
/// Longest piece of user input echoed inside a message (see [`echo`]).
pub const MAX_ECHO: usize = 80;

impl Problem {
    /// A problem at `path`. Both parts are escaped (control, bidi and zero-width characters
    /// become `\u{…}`, so user input cannot forge output lines or terminal effects) and capped.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: clean(&path.into(), MAX_PATH),
            message: clean(&message.into(), MAX_MESSAGE),
        }
    }
}

/// Whether `c` must not reach a terminal or a log line raw: controls (newlines, escapes, C1),
/// bidi overrides and isolates, zero-width and line/paragraph separators.
pub fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// `text` with unsafe characters escaped, cut to `max` characters (marked with `…`).
fn clean(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n >= max {
            out.push('…');
            break;
        }
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A piece of user input for a message: escaped and cut to [`MAX_ECHO`] characters.
pub fn echo(text: &str) -> String {
    clean(text, MAX_ECHO)
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one document; never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// The problems, in path order.
    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }

    /// How many problems there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none (never true for a returned error).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problem at exactly `path`, if any.
    pub fn at(&self, path: &str) -> Option<&Problem> {
        self.0.iter().find(|p| p.path == path)
    }
}

impl From<Vec<Problem>> for Problems {
    fn from(mut problems: Vec<Problem>) -> Self {
        problems.dedup();
        Self(problems)
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "{n} problem{}:", if n == 1 { "" } else { "s" })?;
        for p in &self.0 {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// Appends `.field` to a JSON path.
pub fn child(path: &str, field: &str) -> String {
    if path == "$" {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// Appends `[index]` to a JSON path.
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}
