//! What a benchmark run costs the process (CPU time, peak memory, from procfs) and what
//! an update between two artifacts has to write.

use std::time::Duration;

use compiler::artifact::Artifact;

/// What an update from one artifact to another has to write: (added, removed, value
/// changed) keys of each map, and the endpoint and identity records of the new artifact
/// that the old one does not hold.
#[derive(Clone, Debug, Default)]
pub struct Diff {
    pub policy: (usize, usize, usize),
    pub ipcache: (usize, usize, usize),
    pub endpoints: usize,
    pub identities: usize,
}

impl Diff {
    pub fn between(old: &Artifact, new: &Artifact) -> Diff {
        let endpoints = {
            let old: std::collections::BTreeSet<_> = old.endpoints.iter().collect();
            new.endpoints.iter().filter(|e| !old.contains(e)).count()
        };
        let identities = {
            let old: std::collections::BTreeSet<_> = old.identities.iter().collect();
            new.identities.iter().filter(|e| !old.contains(e)).count()
        };
        Diff {
            policy: diff_sorted(&old.policy, &new.policy),
            ipcache: diff_sorted(&old.ipcache, &new.ipcache),
            endpoints,
            identities,
        }
    }
}

/// Merges two key-sorted lists: (added, removed, value changed).
fn diff_sorted<K: Ord, V: PartialEq>(old: &[(K, V)], new: &[(K, V)]) -> (usize, usize, usize) {
    let (mut i, mut j, mut out) = (0, 0, (0, 0, 0));
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if a.0 == b.0 => {
                out.2 += usize::from(a.1 != b.1);
                (i, j) = (i + 1, j + 1);
            }
            (Some(a), Some(b)) if a.0 < b.0 => (out.1, i) = (out.1 + 1, i + 1),
            (Some(_), None) => (out.1, i) = (out.1 + 1, i + 1),
            _ => (out.0, j) = (out.0 + 1, j + 1),
        }
    }
    out
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// Resets the kernel's peak-RSS mark for this process (Linux 4.0+: writing 5 to
/// clear_refs); on failure the peak stays the process-wide one.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// User plus system time of this process so far, from /proc/self/stat (in clock ticks,
/// assumed to be the usual 100 per second).
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line, 11 and 12 counted from the state.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
