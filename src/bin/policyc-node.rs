//! `policyc-node`: enforces a compiled artifact on this node's interfaces.
//!
//! ```text
//! policyc-node apply ARTIFACT --iface NAME=NAMESPACE/POD [--iface ...] [--pin-dir DIR]
//! policyc-node status [--pin-dir DIR]
//! policyc-node uninstall [--pin-dir DIR]
//! ```
//!
//! Logs go to stderr (`RUST_LOG` sets the filter, `warn` by default); results go to
//! stdout. On error the whole cause chain is printed and the exit code is 1.
#![expect(clippy::print_stdout, clippy::print_stderr, reason = "a command-line tool prints")]

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use compiler::artifact::Artifact;
use runtime::{ApplyReport, Binding, Hook, Status, UninstallReport};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "policyc-node", version, about = "Enforce a policyc artifact on this node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enforce an artifact on the given interfaces.
    ///
    /// Loads the datapath if needed, brings its maps to the artifact's content (writing
    /// only what differs from the live maps) and attaches it to the interfaces. The
    /// bindings are the node's complete set: interfaces bound before and not named now
    /// are detached.
    Apply {
        /// The artifact written by `policyc compile`.
        artifact: PathBuf,
        /// A host-side interface and the endpoint whose traffic it carries.
        #[arg(long = "iface", value_name = "NAME=NAMESPACE/POD", required = true)]
        interfaces: Vec<Binding>,
        #[command(flatten)]
        options: EventArgs,
        #[command(flatten)]
        pins: PinDirArg,
    },
    /// Show map usage, datapath counters and bound interfaces.
    Status {
        #[command(flatten)]
        pins: PinDirArg,
    },
    /// Detach the datapath from every interface and remove its pins.
    Uninstall {
        #[command(flatten)]
        pins: PinDirArg,
    },
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

impl From<EventArgs> for runtime::ApplyOptions {
    fn from(args: EventArgs) -> Self {
        runtime::ApplyOptions {
            event_rate: args.event_rate,
            event_burst: args.event_burst,
            events_allowed: args.events_allowed,
        }
    }
}

#[derive(Debug, clap::Args)]
struct PinDirArg {
    /// The bpffs directory holding the maps and links.
    #[arg(long, value_name = "DIR", default_value = runtime::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    match run(Cli::parse()) {
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
            let report = runtime::apply(&pins.pin_dir, &artifact, &interfaces, &options.into())
                .with_context(|| format!("applying the artifact in {}", pins.pin_dir.display()))?;
            print_apply(&report);
        }
        Command::Status { pins } => {
            let status = runtime::status(&pins.pin_dir)?;
            print_status(&status);
        }
        Command::Uninstall { pins } => {
            let report = runtime::uninstall(&pins.pin_dir)?;
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
        println!("  {:<16} {endpoint}; links: {hooks}", interface.name);
    }
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
