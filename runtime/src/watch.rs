//! `watch`: the node daemon for GitOps pull. It applies the newest artifact of a
//! directory whenever that changes, re-applies it now and then to repair drift, and
//! serves Prometheus metrics on a (loopback) address.
//!
//! The daemon holds no state the datapath needs: maps and links are pinned, so stopping
//! or restarting it changes nothing in the kernel, and its first apply after a restart
//! writes nothing when the maps already hold the newest artifact. An artifact that does
//! not decode (truncated by a half-finished copy, corrupted, for another datapath) is
//! refused and logged, and enforcement stays as it was.

use std::{
    fmt::Write as _,
    fs,
    io::{self, BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use compiler::artifact::Artifact;

use crate::{
    bindings::Binding,
    error::{Result, RuntimeError},
    loader::{self, ApplyOptions, Status},
    store::{NodeBindings, hex},
};

/// What `watch` does and where.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// The directory whose newest `*.artifact` file is enforced.
    pub dir: PathBuf,
    pub pin_dir: PathBuf,
    /// The interfaces to bind; empty: the bindings stored by the last apply (which
    /// `endpoint add|remove` change), read again at every apply.
    pub bindings: Vec<Binding>,
    pub apply: ApplyOptions,
    /// How often the directory is looked at.
    pub interval: Duration,
    /// How often the current artifact is applied again (repairing drift) although no
    /// new one appeared.
    pub resync: Duration,
    /// Where metrics are served, if anywhere.
    pub metrics: Option<SocketAddr>,
}

/// What the daemon did so far, for metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WatchStats {
    pub applies_ok: u64,
    pub applies_failed: u64,
    /// Artifacts refused because they did not read or decode.
    pub refused: u64,
    /// Map operations of all applies.
    pub operations: u64,
    pub apply_seconds_sum: f64,
    pub last_apply_seconds: f64,
    /// The file applied last, and its checksum.
    pub artifact: Option<(PathBuf, [u8; 32])>,
}

/// A file's identity for change detection: path, modification time, size.
type Seen = (PathBuf, SystemTime, u64);

/// Runs until `stop` is set (a signal handler or a test sets it).
pub fn watch(options: &WatchOptions, stop: &AtomicBool) -> Result<()> {
    let _span = tracing::info_span!("watch", dir = %options.dir.display()).entered();
    let stats = Arc::new(Mutex::new(WatchStats::default()));
    if let Some(addr) = options.metrics {
        let listener = TcpListener::bind(addr)
            .map_err(|source| RuntimeError::Metrics { addr: addr.to_string(), source })?;
        let local = listener.local_addr().map_or_else(|_| addr.to_string(), |a| a.to_string());
        tracing::info!(addr = %local, "serving metrics at /metrics");
        let (pin_dir, stats) = (options.pin_dir.clone(), Arc::clone(&stats));
        thread::spawn(move || serve_metrics(&listener, &pin_dir, &stats));
    }

    let mut seen: Option<Seen> = None;
    let mut last_apply: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        let newest = newest_artifact(&options.dir)?;
        let due = last_apply.is_none_or(|t| t.elapsed() >= options.resync);
        if let Some(file) = newest.filter(|f| seen.as_ref() != Some(f) || due) {
            let changed = seen.as_ref() != Some(&file);
            seen = Some(file.clone());
            last_apply = Some(Instant::now());
            apply_file(options, &file.0, changed, &stats);
        }
        sleep_unless_stopped(options.interval, stop);
    }
    tracing::info!("stopped");
    Ok(())
}

fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let end = Instant::now() + total;
    while !stop.load(Ordering::SeqCst) {
        let Some(left) = end.checked_duration_since(Instant::now()) else { return };
        thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Applies one file, logging the outcome; failures are recorded, never fatal.
fn apply_file(options: &WatchOptions, path: &Path, changed: bool, stats: &Mutex<WatchStats>) {
    let read = fs::read(path).map_err(|e| e.to_string()).and_then(|bytes| {
        let artifact = Artifact::decode(&bytes).map_err(|e| e.to_string())?;
        let mut checksum = [0u8; 32];
        checksum.copy_from_slice(&bytes[bytes.len() - 32..]);
        Ok((artifact, checksum))
    });
    let (artifact, checksum) = match read {
        Ok(read) => read,
        Err(error) => {
            tracing::error!(path = %path.display(), error, "artifact refused; enforcement unchanged");
            lock(stats).refused += 1;
            return;
        }
    };
    let started = Instant::now();
    let result = NodeBindings::new(&options.apply.state_dir)
        .or_stored(options.bindings.clone())
        .and_then(|bindings| loader::apply(&options.pin_dir, &artifact, &bindings, &options.apply));
    let seconds = started.elapsed().as_secs_f64();
    let mut stats = lock(stats);
    match result {
        Ok(report) => {
            stats.applies_ok += 1;
            stats.operations += report.operations as u64;
            stats.apply_seconds_sum += seconds;
            stats.last_apply_seconds = seconds;
            stats.artifact = Some((path.to_owned(), checksum));
            tracing::info!(
                path = %path.display(),
                checksum = %hex(&checksum[..6]),
                new_file = changed,
                operations = report.operations,
                generation = report.generations.1,
                seconds,
                "applied"
            );
        }
        Err(error) => {
            stats.applies_failed += 1;
            let chain = error_chain(&error);
            tracing::error!(path = %path.display(), error = chain, "apply failed; will retry");
        }
    }
}

fn lock(stats: &Mutex<WatchStats>) -> std::sync::MutexGuard<'_, WatchStats> {
    // A panic while the lock was held cannot leave the counters inconsistent in a way
    // that matters more than losing them.
    stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// The newest `*.artifact` file of `dir` (latest modification, then name). Hidden files
/// are skipped: copy tools write into those before renaming into place.
pub fn newest_artifact(dir: &Path) -> Result<Option<Seen>> {
    let read_err = |source| RuntimeError::ReadDir { path: dir.to_owned(), source };
    let mut newest: Option<Seen> = None;
    for entry in fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".artifact") {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let seen = (entry.path(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len());
        if newest.as_ref().is_none_or(|n| (seen.1, &seen.0) > (n.1, &n.0)) {
            newest = Some(seen);
        }
    }
    Ok(newest)
}

/// Answers `GET /metrics` one connection at a time, until the process ends.
fn serve_metrics(listener: &TcpListener, pin_dir: &Path, stats: &Mutex<WatchStats>) {
    for stream in listener.incoming().flatten() {
        if let Err(error) = answer(stream, pin_dir, stats) {
            tracing::debug!(%error, "metrics request failed");
        }
    }
}

fn answer(stream: TcpStream, pin_dir: &Path, stats: &Mutex<WatchStats>) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // The rest of the head is read and ignored, within a bound.
    let mut line = String::new();
    for _ in 0..100 {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut stream = stream;
    let path = request.split_whitespace().nth(1).unwrap_or("");
    if !request.starts_with("GET ") || (path != "/metrics" && path != "/") {
        let body = "not found: metrics are at /metrics\n";
        return write!(
            stream,
            "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        );
    }
    let status = loader::status(pin_dir)
        .map_err(|e| tracing::warn!(error = error_chain(&e), "status for metrics"));
    let body = render_metrics(status.ok().as_ref(), &lock(stats));
    write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// The Prometheus text exposition of the node's state and the daemon's counters.
pub fn render_metrics(status: Option<&Status>, stats: &WatchStats) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    if let Some(status) = status {
        let by_reason = |bytes: bool| -> Vec<(String, String)> {
            status
                .metrics
                .iter()
                .map(|(reason, value)| {
                    let verdict = if reason.is_drop() { "drop" } else { "pass" };
                    let labels = format!("{{verdict=\"{verdict}\",reason=\"{}\"}}", reason.label());
                    (labels, (if bytes { value.bytes } else { value.packets }).to_string())
                })
                .collect()
        };
        family(
            "policyc_datapath_packets_total",
            "counter",
            "Packets the datapath judged, by verdict and reason.",
            &by_reason(false),
        );
        family(
            "policyc_datapath_bytes_total",
            "counter",
            "Bytes the datapath judged, by verdict and reason.",
            &by_reason(true),
        );
        let maps = |capacity: bool| -> Vec<(String, String)> {
            status
                .maps
                .iter()
                .map(|m| {
                    let value = if capacity { m.capacity as usize } else { m.entries };
                    (format!("{{map=\"{}\"}}", m.map.pin_name()), value.to_string())
                })
                .collect()
        };
        family("policyc_map_entries", "gauge", "Entries in each datapath map.", &maps(false));
        family("policyc_map_capacity", "gauge", "Capacity of each datapath map.", &maps(true));
        family(
            "policyc_generation",
            "gauge",
            "The live generation of the maps.",
            &[(String::new(), status.generation.to_string())],
        );
        family(
            "policyc_artifact_info",
            "gauge",
            "The live artifact: its checksum and source digest.",
            &[(
                format!(
                    "{{checksum=\"{}\",source_digest=\"{}\"}}",
                    hex(&status.artifact_checksum),
                    hex(&status.source_digest)
                ),
                "1".into(),
            )],
        );
    }
    let result = |ok: bool, n: u64| {
        (format!("{{result=\"{}\"}}", if ok { "ok" } else { "error" }), n.to_string())
    };
    family(
        "policyc_applies_total",
        "counter",
        "Applies the daemon ran, by result.",
        &[result(true, stats.applies_ok), result(false, stats.applies_failed)],
    );
    family(
        "policyc_artifacts_refused_total",
        "counter",
        "Artifact files that did not read or decode; enforcement was left unchanged.",
        &[(String::new(), stats.refused.to_string())],
    );
    family(
        "policyc_apply_operations_total",
        "counter",
        "Map operations (writes, deletes, generation flips) of all applies.",
        &[(String::new(), stats.operations.to_string())],
    );
    family(
        "policyc_apply_duration_seconds",
        "summary",
        "Wall time of successful applies.",
        &[
            ("_sum".into(), stats.apply_seconds_sum.to_string()),
            ("_count".into(), stats.applies_ok.to_string()),
        ],
    );
    family(
        "policyc_last_apply_duration_seconds",
        "gauge",
        "Wall time of the last successful apply.",
        &[(String::new(), stats.last_apply_seconds.to_string())],
    );
    out
}

#[cfg(test)]
mod tests {
    use datapath::{MetricsValue, Reason};

    use super::*;
    use crate::{loader::MapUsage, maps::MapName};

    #[test]
    fn metrics_follow_the_prometheus_text_format() {
        let status = Status {
            generation: 7,
            maps: vec![MapUsage { map: MapName::Policy, entries: 12, capacity: 524_288 }],
            metrics: vec![(Reason::DropPolicyDeny, MetricsValue { packets: 3, bytes: 180 })],
            ..Status::default()
        };
        let stats = WatchStats {
            applies_ok: 2,
            operations: 40,
            apply_seconds_sum: 0.5,
            ..WatchStats::default()
        };

        let text = render_metrics(Some(&status), &stats);

        for line in [
            "# TYPE policyc_datapath_packets_total counter",
            "policyc_datapath_packets_total{verdict=\"drop\",reason=\"policy_deny\"} 3",
            "policyc_datapath_bytes_total{verdict=\"drop\",reason=\"policy_deny\"} 180",
            "policyc_map_entries{map=\"policyc_policy\"} 12",
            "policyc_map_capacity{map=\"policyc_policy\"} 524288",
            "policyc_generation 7",
            "policyc_applies_total{result=\"ok\"} 2",
            "policyc_apply_operations_total 40",
            "policyc_apply_duration_seconds_sum 0.5",
            "policyc_apply_duration_seconds_count 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // Every sample line is `name{labels} value` with a number for value.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn the_newest_artifact_file_wins_and_partial_copies_are_skipped() {
        let dir = std::env::temp_dir().join(format!("policyc-watch-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("a.artifact"), b"1").unwrap();
        thread::sleep(Duration::from_millis(20));
        fs::write(dir.join("b.artifact"), b"2").unwrap();
        fs::write(dir.join(".c.artifact"), b"partial").unwrap();
        fs::write(dir.join("notes.txt"), b"no").unwrap();

        let newest = newest_artifact(&dir).unwrap().map(|(p, _, _)| p);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(newest, Some(dir.join("b.artifact")));
    }
}
