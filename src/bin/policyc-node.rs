//! `policyc-node`: enforces a compiled artifact on this node's interfaces.
//!
//! ```text
//! policyc-node apply ARTIFACT [--iface NAME=NAMESPACE/POD|NAME=node/NODE ...] [DIRS]
//! policyc-node endpoint add --iface NAME --endpoint NAMESPACE/POD [--ip ADDR ...]
//!                           [--label KEY=VALUE ...] [--service-account NAME] [DIRS]
//! policyc-node endpoint remove --iface NAME [DIRS]
//! policyc-node status [--format human|json] [DIRS]
//! policyc-node observe [FILTERS] [--format human|json] [--count N] [--timeout SECS] [DIRS]
//! policyc-node watch DIR --iface NAME=NAMESPACE/POD ... [--metrics ADDR] [DIRS]
//! policyc-node uninstall [DIRS]
//!
//! DIRS: --pin-dir DIR (bpffs: maps and links), --state-dir DIR (stored artifacts)
//! ```
//!
//! Logs go to stderr (`RUST_LOG` sets the filter, `warn` by default); results go to
//! stdout. On error the whole cause chain is printed and the exit code is 1.
#![expect(clippy::print_stdout, clippy::print_stderr, reason = "a command-line tool prints")]

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use compiler::artifact::Artifact;
use runtime::{ApplyReport, Binding, Hook, Status, UninstallReport};
use serde_json::json;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "policyc-node", version, about = "Enforce a policyc artifact on this node")]
struct Cli {
    /// How logs are written to stderr: text for people, or JSON lines for collectors.
    #[arg(long, value_enum, default_value_t = Format::Human, global = true)]
    log_format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enforce an artifact on the given interfaces.
    ///
    /// Loads the datapath if needed, brings its maps to the artifact's content (writing
    /// only what differs from the live maps) and attaches it to the interfaces. The
    /// bindings given are the node's complete set: interfaces bound before and not named
    /// now are detached. Without --iface, the bindings of the last apply (and of
    /// `endpoint add|remove` since) are kept.
    Apply {
        /// The artifact written by `policyc compile`.
        artifact: PathBuf,
        /// A host-side interface and the endpoint whose traffic it carries; or this
        /// node's uplink and its host endpoint, `NAME=node/NODE` (when host policies
        /// select the node): the node's own traffic there is judged by them.
        #[arg(long = "iface", value_name = "NAME=NAMESPACE/POD")]
        interfaces: Vec<Binding>,
        #[command(flatten)]
        options: EventArgs,
        #[command(flatten)]
        pins: PinDirArg,
    },
    /// Show the live artifact, map usage, datapath counters and bound interfaces.
    Status {
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        #[command(flatten)]
        pins: PinDirArg,
    },
    /// Print verdict events as flows: drops (and, after `apply --events-allowed`, new
    /// allowed flows) with both sides' identities, labels and the deciding rule.
    /// Follows until interrupted, or until --count events or --timeout seconds.
    Observe {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Stop after this many events were printed.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
        /// Also print the events that were waiting in the ring buffer, not only new ones.
        #[arg(long)]
        backlog: bool,
        #[command(flatten)]
        pins: PinDirArg,
    },
    /// Run as the node daemon: apply the newest `*.artifact` file of DIR whenever it
    /// changes (a GitOps pull writes there), re-apply it now and then to repair drift,
    /// and serve Prometheus metrics. Stopping it (any signal) leaves enforcement as it
    /// is; a restart re-applies and writes nothing if nothing changed.
    Watch {
        /// The directory to watch.
        dir: PathBuf,
        /// A host-side interface and the endpoint whose traffic it carries; without any,
        /// the node's stored bindings, which `endpoint add|remove` change.
        #[arg(long = "iface", value_name = "NAME=NAMESPACE/POD")]
        interfaces: Vec<Binding>,
        /// Seconds between looks at the directory.
        #[arg(long, value_name = "SECS", default_value_t = 1.0)]
        interval: f64,
        /// Seconds between re-applies of an unchanged artifact.
        #[arg(long, value_name = "SECS", default_value_t = 60.0)]
        resync: f64,
        /// Address of the metrics endpoint (GET /metrics); `off` serves none.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
        metrics: String,
        #[command(flatten)]
        options: EventArgs,
        #[command(flatten)]
        pins: PinDirArg,
    },
    /// Bind or unbind one interface without a new artifact: a pod that started or went
    /// away. The live artifact and the node's other bindings are kept; only the entries
    /// that change are written.
    Endpoint {
        #[command(subcommand)]
        action: EndpointAction,
    },
    /// Detach the datapath from every interface, remove its pins and stored artifacts.
    Uninstall {
        #[command(flatten)]
        pins: PinDirArg,
    },
}

#[derive(Debug, Subcommand)]
enum EndpointAction {
    /// Bind an interface to a pod. A pod the artifact does not list (a new replica) needs
    /// its addresses and labels: it gets the identity the artifact has for that label
    /// set and the policy of the pods that share it; a label set the artifact has no
    /// identity for is an error that asks for a recompile.
    Add {
        /// The host-side interface.
        #[arg(long = "iface", value_name = "NAME")]
        interface: String,
        /// The pod, NAMESPACE/POD.
        #[arg(long, value_name = "NAMESPACE/POD")]
        endpoint: String,
        /// The pod's address (repeat for dual stack).
        #[arg(long = "ip", value_name = "ADDR")]
        addresses: Vec<std::net::IpAddr>,
        /// One of the pod's labels.
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// The pod's service account (default: `default`).
        #[arg(long, value_name = "NAME")]
        service_account: Option<String>,
        #[command(flatten)]
        options: EventArgs,
        #[command(flatten)]
        pins: PinDirArg,
    },
    /// Unbind an interface: its programs are detached and its entries removed.
    Remove {
        /// The host-side interface.
        #[arg(long = "iface", value_name = "NAME")]
        interface: String,
        #[command(flatten)]
        options: EventArgs,
        #[command(flatten)]
        pins: PinDirArg,
    },
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// Text for people.
    Human,
    /// JSON (for observe: one object per line).
    Json,
}

/// Which events `observe` prints.
#[derive(Debug, clap::Args)]
struct FilterArgs {
    /// Only drops, or only allowed flows.
    #[arg(long, value_enum)]
    verdict: Option<VerdictArg>,
    /// Only events at this endpoint (NAMESPACE/POD).
    #[arg(long, value_name = "NAMESPACE/POD")]
    endpoint: Option<String>,
    /// Only events where either side has this security identity.
    #[arg(long, value_name = "N")]
    identity: Option<u32>,
    /// Only events where either side's identity has this label (KEY or KEY=VALUE).
    #[arg(long, value_name = "KEY[=VALUE]")]
    label: Option<String>,
    /// Only this protocol (tcp, udp, sctp, icmp, icmpv6 or a number).
    #[arg(long, value_name = "PROTO", value_parser = parse_protocol)]
    protocol: Option<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum VerdictArg {
    Drop,
    Allow,
}

fn parse_protocol(text: &str) -> Result<u8, String> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "sctp" => Ok(132),
        "icmp" => Ok(1),
        "icmpv6" => Ok(58),
        other => other.parse().map_err(|_| format!("unknown protocol {text:?}")),
    }
}

impl From<FilterArgs> for runtime::observe::Filter {
    fn from(args: FilterArgs) -> Self {
        runtime::observe::Filter {
            drops: args.verdict.map(|v| v == VerdictArg::Drop),
            endpoint: args.endpoint,
            identity: args.identity,
            label: args.label.map(|l| match l.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (l, None),
            }),
            protocol: args.protocol,
        }
    }
}

/// How many verdict events the datapath sends.
#[derive(Debug, clap::Args)]
struct EventArgs {
    /// Verdict events each CPU may send per second (drops, and new flows with
    /// --events-allowed); 0 sends none.
    #[arg(long, value_name = "N", default_value_t = runtime::loader::DEFAULT_EVENT_RATE)]
    event_rate: u32,
    /// Events a CPU may send at once after a quiet spell.
    #[arg(long, value_name = "N", default_value_t = runtime::loader::DEFAULT_EVENT_BURST)]
    event_burst: u32,
    /// Also report every flow that policy newly allows, not only drops.
    #[arg(long)]
    events_allowed: bool,
}

impl EventArgs {
    fn options(self, state_dir: &Path) -> runtime::ApplyOptions {
        runtime::ApplyOptions {
            state_dir: state_dir.to_owned(),
            event_rate: self.event_rate,
            event_burst: self.event_burst,
            events_allowed: self.events_allowed,
        }
    }
}

#[derive(Debug, clap::Args)]
struct PinDirArg {
    /// The bpffs directory holding the maps and links.
    #[arg(long, value_name = "DIR", default_value = runtime::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// The directory where applied artifacts are kept, to explain events.
    #[arg(long, value_name = "DIR", default_value = runtime::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon reports what it does; the one-shot commands only warnings.
    let default = if matches!(cli.command, Command::Watch { .. }) { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        Format::Human => logs.init(),
        Format::Json => logs.json().init(),
    }

    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Apply { artifact, interfaces, options, pins } => {
            let artifact = read_artifact(&artifact)?;
            let options = options.options(&pins.state_dir);
            let interfaces =
                runtime::store::NodeBindings::new(&pins.state_dir).or_stored(interfaces)?;
            let report = runtime::apply(&pins.pin_dir, &artifact, &interfaces, &options)
                .with_context(|| format!("applying the artifact in {}", pins.pin_dir.display()))?;
            print_apply(&report);
        }
        Command::Status { format, pins } => {
            let status = runtime::status(&pins.pin_dir)?;
            match format {
                Format::Human => print_status(&status),
                Format::Json => println!("{:#}", status_json(&status)),
            }
        }
        Command::Observe { filter, format, count, timeout, backlog, pins } => {
            observe(&pins, &filter.into(), format, (count, timeout), backlog)?;
        }
        Command::Watch { dir, interfaces, interval, resync, metrics, options, pins } => {
            let metrics = match metrics.as_str() {
                "off" => None,
                addr => Some(addr.parse().with_context(|| format!("metrics address {addr}"))?),
            };
            let seconds = |s: f64| Duration::from_secs_f64(s.max(0.01));
            let options = runtime::watch::WatchOptions {
                dir,
                pin_dir: pins.pin_dir.clone(),
                bindings: interfaces,
                apply: options.options(&pins.state_dir),
                interval: seconds(interval),
                resync: seconds(resync),
                metrics,
            };
            // Runs until the process is stopped: the daemon keeps no state of its own.
            let never = std::sync::atomic::AtomicBool::new(false);
            runtime::watch::watch(&options, &never)?;
        }
        Command::Endpoint { action } => {
            let report = match action {
                EndpointAction::Add {
                    interface,
                    endpoint,
                    addresses,
                    labels,
                    service_account,
                    options,
                    pins,
                } => {
                    let pod = (!addresses.is_empty() || !labels.is_empty()).then(|| {
                        runtime::bindings::UnlistedPod {
                            addresses,
                            labels: labels.into_iter().collect(),
                            service_account,
                        }
                    });
                    let binding = Binding { interface, endpoint, pod };
                    let options = options.options(&pins.state_dir);
                    runtime::loader::bind(&pins.pin_dir, binding, &options)?
                }
                EndpointAction::Remove { interface, options, pins } => {
                    let options = options.options(&pins.state_dir);
                    runtime::loader::unbind(&pins.pin_dir, &interface, &options)?
                }
            };
            print_apply(&report);
        }
        Command::Uninstall { pins } => {
            let report = runtime::uninstall(&pins.pin_dir, &pins.state_dir)?;
            print_uninstall(&pins.pin_dir, &report);
        }
    }
    Ok(())
}

fn read_artifact(path: &Path) -> Result<Artifact> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading artifact {}", path.display()))?;
    Artifact::decode(&bytes).with_context(|| format!("decoding artifact {}", path.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn links(links: &[(String, Hook)]) -> String {
    if links.is_empty() {
        return "none".to_owned();
    }
    let names: Vec<String> =
        links.iter().map(|(interface, hook)| format!("{interface} ({})", hook.name())).collect();
    names.join(", ")
}

fn print_apply(report: &ApplyReport) {
    let (from, to) = report.generations;
    println!("applied artifact {} (generation {from} -> {to})", hex(&report.source_digest[..6]));
    if !report.install.created.is_empty() {
        println!("  created maps: {}", report.install.created.join(", "));
    }
    if !report.install.migrated.is_empty() {
        println!("  migrated maps (layout changed): {}", report.install.migrated.join(", "));
    }
    for (map, changes) in &report.changes {
        println!(
            "  {:<20} {:>7} written {:>7} deleted",
            map.pin_name(),
            changes.written,
            changes.deleted
        );
    }
    println!("  map operations: {}", report.operations);
    println!("  attached: {}", links(&report.attached));
    println!("  already attached: {}", links(&report.kept));
    if !report.replaced.is_empty() {
        println!("  program replaced: {}", links(&report.replaced));
    }
    if !report.detached.is_empty() {
        println!("  detached: {}", links(&report.detached));
    }
}

fn print_status(status: &Status) {
    println!(
        "artifact {} (checksum {}), generation {}",
        hex(&status.source_digest[..6]),
        hex(&status.artifact_checksum[..6]),
        status.generation
    );
    println!("maps:");
    for usage in &status.maps {
        let percent = usage.entries as f64 * 100.0 / f64::from(usage.capacity);
        println!(
            "  {:<20} {:>7} / {:<7} ({percent:.1}%)",
            usage.map.pin_name(),
            usage.entries,
            usage.capacity
        );
    }
    println!("counters (packets, bytes; all CPUs):");
    for (reason, value) in &status.metrics {
        println!(
            "  {:<28} {:>4} {:>12} {:>14}",
            reason.c_name(),
            reason.code(),
            value.packets,
            value.bytes
        );
    }
    println!("interfaces:");
    if status.interfaces.is_empty() {
        println!("  none");
    }
    for interface in &status.interfaces {
        let endpoint = interface.endpoint.map_or_else(
            || "no endpoint entry".to_owned(),
            |e| {
                format!(
                    "endpoint {} identity {} ingress table {} egress table {}",
                    e.endpoint_id, e.identity, e.ingress_table, e.egress_table
                )
            },
        );
        let hooks: Vec<&str> = interface.links.iter().map(|h| h.name()).collect();
        let hooks = if hooks.is_empty() { "none".to_owned() } else { hooks.join("+") };
        // A node's uplink carries the programs the other way round.
        let role = if interface.host { " (host endpoint, programs reversed)" } else { "" };
        println!("  {:<16} {endpoint}{role}; links: {hooks}", interface.name);
    }
}

fn status_json(status: &Status) -> serde_json::Value {
    let counters = |metrics: &[(runtime::Reason, runtime::MetricsValue)]| -> serde_json::Value {
        metrics
            .iter()
            .map(|(reason, value)| {
                json!({
                    "reason": reason.c_name(),
                    "code": reason.code(),
                    "drop": reason.is_drop(),
                    "packets": value.packets,
                    "bytes": value.bytes,
                })
            })
            .collect()
    };
    json!({
        "generation": status.generation,
        "source_digest": hex(&status.source_digest),
        "artifact_checksum": hex(&status.artifact_checksum),
        "maps": status.maps.iter().map(|m| json!({
            "map": m.map.pin_name(),
            "entries": m.entries,
            "capacity": m.capacity,
        })).collect::<Vec<_>>(),
        "counters": counters(&status.metrics),
        "interfaces": status.interfaces.iter().map(|i| json!({
            "name": i.name,
            "ifindex": i.ifindex,
            "endpoint": i.endpoint.map(|e| json!({
                "endpoint_id": e.endpoint_id,
                "identity": e.identity,
                "ingress_table": e.ingress_table,
                "egress_table": e.egress_table,
            })),
            "host": i.host,
            "links": i.links.iter().map(|h| h.name()).collect::<Vec<_>>(),
            "counters": counters(&i.metrics),
        })).collect::<Vec<_>>(),
    })
}

/// Prints events as they arrive until `count` were printed or `timeout` passed.
fn observe(
    pins: &PinDirArg,
    filter: &runtime::observe::Filter,
    format: Format,
    (count, timeout): (Option<u64>, Option<f64>),
    backlog: bool,
) -> Result<()> {
    let mut observer = runtime::observe::Observer::open(&pins.pin_dir, &pins.state_dir, backlog)
        .with_context(|| format!("observing the datapath in {}", pins.pin_dir.display()))?;
    if !observer.has_artifact() {
        eprintln!(
            "note: the live artifact is not in {}; events show numbers instead of names",
            pins.state_dir.display()
        );
    }
    eprintln!("observing verdict events in {} (Ctrl-C stops)", pins.pin_dir.display());
    let deadline = timeout.map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut printed = 0u64;
    let mut out = std::io::stdout().lock();
    loop {
        let mut failed = None;
        observer.drain(|seen| {
            if failed.is_some() || !filter.matches(&seen) || count.is_some_and(|n| printed >= n) {
                return;
            }
            let line = match format {
                Format::Human => observed_text(&seen),
                Format::Json => observed_json(&seen).to_string(),
            };
            if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                failed = Some(e);
            }
            printed += 1;
        })?;
        if let Some(e) = failed {
            // A closed pipe (`| head`) ends observation quietly.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e).context("writing events");
        }
        if count.is_some_and(|n| printed >= n) || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn party_text(party: &runtime::observe::Party) -> String {
    let address = match (party.address, party.port) {
        (Some(std::net::IpAddr::V6(a)), Some(p)) => format!("[{a}]:{p}"),
        (Some(a), Some(p)) => format!("{a}:{p}"),
        (Some(a), None) => a.to_string(),
        (None, _) => "?".into(),
    };
    let name = party.endpoint.as_ref().map(|e| format!(" {e}")).unwrap_or_default();
    let labels: Vec<String> = party
        .labels
        .iter()
        .filter(|(k, _)| !k.contains("io.cilium.k8s.namespace.labels"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let identity = if party.identity == 0 {
        String::new()
    } else if labels.is_empty() {
        format!(" (identity {})", party.identity)
    } else {
        format!(" (identity {}: {})", party.identity, labels.join(","))
    };
    format!("{address}{name}{identity}")
}

fn observed_text(seen: &runtime::observe::Observed) -> String {
    let verdict = if seen.is_drop() { "DROP" } else { "ALLOW" };
    let reason =
        seen.reason.map_or_else(|| seen.event.reason.to_string(), |r| r.label().to_owned());
    let (source, destination) = seen.source_destination();
    let rule = seen.rule.as_ref().map_or_else(
        || {
            if seen.reason == Some(runtime::Reason::DropNoPolicy) {
                " by default deny: no rule allows it".to_owned()
            } else {
                String::new()
            }
        },
        |r| format!(" by {} {} ({})", r.policy, r.rule, r.location),
    );
    format!(
        "{verdict} {reason} {} {}: {} -> {}{rule}",
        seen.direction,
        seen.protocol,
        party_text(source),
        party_text(destination),
    )
}

fn observed_json(seen: &runtime::observe::Observed) -> serde_json::Value {
    let party = |p: &runtime::observe::Party| {
        json!({
            "address": p.address.map(|a| a.to_string()),
            "port": p.port,
            "identity": p.identity,
            "labels": p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "endpoint": p.endpoint,
        })
    };
    let (source, destination) = seen.source_destination();
    json!({
        "timestamp_ns": seen.event.timestamp_ns,
        "verdict": if seen.is_drop() { "drop" } else { "allow" },
        "reason": seen.reason.map(|r| r.c_name()),
        "code": seen.event.reason,
        "direction": seen.direction,
        "protocol": seen.protocol,
        "ifindex": seen.event.ifindex,
        "generation": seen.event.generation,
        "source": party(source),
        "destination": party(destination),
        "rule": seen.rule.as_ref().map(|r| json!({
            "cookie": r.cookie,
            "policy": r.policy,
            "rule": r.rule,
            "location": r.location,
        })),
        "length": seen.event.length,
    })
}

fn print_uninstall(pin_dir: &Path, report: &UninstallReport) {
    if !report.found {
        println!("nothing to uninstall: {} does not exist", pin_dir.display());
        return;
    }
    println!(
        "removed {} link pins and {} map pins from {}",
        report.links.len(),
        report.maps.len(),
        pin_dir.display()
    );
    if !report.foreign.is_empty() {
        println!("kept {} (not created by policyc):", pin_dir.display());
        for path in &report.foreign {
            println!("  {}", path.display());
        }
    } else if !report.removed_dir {
        println!("{} was not removed", pin_dir.display());
    }
}
