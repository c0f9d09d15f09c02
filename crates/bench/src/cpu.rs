//! CPU time each side of a copy spent, read from /proc: the source server, the target server,
//! and the tool (this process, which Ferry runs in, plus the children it waited for: pg_dump,
//! pg_restore, pgcopydb). The bed's servers run on this machine, so their postmasters are
//! found from `data_directory`.

use std::path::Path;

use anyhow::{Context, bail};
use ferry_pg::PgUrl;

/// CPU seconds spent during one run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cpu {
    pub source: f64,
    pub target: f64,
    pub tool: f64,
}

impl Cpu {
    pub fn total(&self) -> f64 {
        self.source + self.target + self.tool
    }

    /// How busy it kept this machine's cores over `wall`, in percent.
    pub fn busy(&self, wall: std::time::Duration) -> f64 {
        100.0 * self.total() / (wall.as_secs_f64() * cores() as f64).max(f64::EPSILON)
    }

    /// "source 7.2 s, target 15.2 s, <tool> 3.3 s: 25.7 s in 13.7 s, 94% of 2 cores".
    pub fn describe(&self, tool: &str, wall: std::time::Duration) -> String {
        format!(
            "source {:.1} s, target {:.1} s, {tool} {:.1} s: {:.1} s in {:.1} s, {:.0}% of {} cores",
            self.source,
            self.target,
            self.tool,
            self.total(),
            wall.as_secs_f64(),
            self.busy(wall),
            cores()
        )
    }

    /// What was spent since `before` was read.
    pub fn since(self, before: Cpu) -> Cpu {
        Cpu {
            source: self.source - before.source,
            target: self.target - before.target,
            tool: self.tool - before.tool,
        }
    }
}

/// The cores this machine lets the bench use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Reads the three counters.
pub struct Meter {
    source: u32,
    target: u32,
    /// Clock ticks per second of /proc's counters (`getconf CLK_TCK`).
    ticks: f64,
}

impl Meter {
    pub async fn new(source_admin: &PgUrl, target_admin: &PgUrl) -> anyhow::Result<Self> {
        let out = tokio::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .await
            .context("run getconf CLK_TCK")?;
        let ticks: f64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .context("read getconf CLK_TCK")?;
        if ticks <= 0.0 {
            bail!("getconf CLK_TCK printed {ticks}");
        }
        Ok(Self {
            source: postmaster(source_admin)
                .await
                .context("the source server")?,
            target: postmaster(target_admin)
                .await
                .context("the target server")?,
            ticks,
        })
    }

    /// The counters now, in seconds.
    pub fn read(&self) -> anyhow::Result<Cpu> {
        let stats = all_stats()?;
        let server = |pid: u32| -> anyhow::Result<f64> {
            let own = stats
                .iter()
                .find(|s| s.pid == pid)
                .with_context(|| format!("postmaster {pid} is gone"))?;
            // The postmaster's own time and its reaped children's (backends that ended), plus
            // the children still running (backends, parallel workers, checkpointer…).
            let live: u64 = stats.iter().filter(|s| s.ppid == pid).map(|s| s.own).sum();
            Ok((own.own + own.reaped + live) as f64 / self.ticks)
        };
        let me = std::process::id();
        let tool = stats
            .iter()
            .find(|s| s.pid == me)
            .context("no /proc entry for this process")?;
        Ok(Cpu {
            source: server(self.source)?,
            target: server(self.target)?,
            tool: (tool.own + tool.reaped) as f64 / self.ticks,
        })
    }
}

/// The server's postmaster: the first line of `postmaster.pid` in its data directory.
async fn postmaster(admin: &PgUrl) -> anyhow::Result<u32> {
    let dir: String = admin
        .connect()
        .await?
        .query_one("SHOW data_directory", &[])
        .await
        .context("SHOW data_directory")?
        .get(0);
    let file = Path::new(&dir).join("postmaster.pid");
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "read {} (the bench measures servers on this machine)",
            file.display()
        )
    })?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("no pid on the first line of {}", file.display()))
}

/// One process's counters from `/proc/<pid>/stat`, in clock ticks.
#[derive(Debug, PartialEq)]
struct Stat {
    pid: u32,
    ppid: u32,
    /// utime + stime.
    own: u64,
    /// cutime + cstime: the children it has waited for.
    reaped: u64,
}

fn all_stats() -> anyhow::Result<Vec<Stat>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").context("read /proc")? {
        let entry = entry.context("read /proc")?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may end between the listing and the read.
        if let Ok(text) = std::fs::read_to_string(entry.path().join("stat"))
            && let Some(s) = parse_stat(pid, &text)
        {
            out.push(s);
        }
    }
    Ok(out)
}

/// Parses a stat line. The command name (field 2) is in parentheses and may hold spaces or
/// parentheses itself, so the fields are counted from its last `)`.
fn parse_stat(pid: u32, text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field n is f[n - 3].
    let n = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
    Some(Stat {
        pid,
        ppid: u32::try_from(n(4)?).ok()?,
        own: n(14)? + n(15)?,
        reaped: n(16)? + n(17)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_the_share_of_every_core_over_the_wall_time() {
        let cpu = Cpu {
            source: 1.0,
            target: 2.0,
            tool: 1.0,
        };
        let wall = std::time::Duration::from_secs(4);
        assert!((cpu.busy(wall) - 100.0 / cores() as f64).abs() < 1e-9);
        assert!(
            cpu.describe("Ferry", wall)
                .contains("Ferry 1.0 s: 4.0 s in 4.0 s")
        );
    }

    #[test]
    fn a_stat_line_is_read_from_after_the_command_name() {
        let line =
            "4242 (postgres: a) b) S 17 4242 4242 0 -1 4194560 9 0 0 0 120 30 7 3 20 0 1 0 5 0 0";
        assert_eq!(
            parse_stat(4242, line),
            Some(Stat {
                pid: 4242,
                ppid: 17,
                own: 150,
                reaped: 10
            })
        );
        assert_eq!(parse_stat(1, "1 (init) S 0 1"), None, "too few fields");
        assert_eq!(parse_stat(1, "no parenthesis"), None);
    }

    #[test]
    fn this_process_is_found_in_proc() {
        let me = std::process::id();
        let all = all_stats().expect("read /proc");
        let mine = all.iter().find(|s| s.pid == me).expect("this process");
        assert!(all.iter().any(|s| s.pid == mine.ppid), "its parent too");
    }
}
