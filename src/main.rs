//! `policyc`: compile Kubernetes network policies into datapath map images.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use compiler::artifact::Artifact;
use policy_lang::{Severity, Sources};

mod connectivity;
mod diff;
mod trace;

#[derive(Parser)]
#[command(
    name = "policyc",
    version,
    about = "Compile Kubernetes network policies into eBPF map images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Human,
    Json,
    Sarif,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum EnforcementArg {
    Default,
    Always,
    Never,
}

impl From<EnforcementArg> for compiler::ir::Enforcement {
    fn from(arg: EnforcementArg) -> Self {
        match arg {
            EnforcementArg::Default => compiler::ir::Enforcement::Default,
            EnforcementArg::Always => compiler::ir::Enforcement::Always,
            EnforcementArg::Never => compiler::ir::Enforcement::Never,
        }
    }
}

/// The choices that change what policies mean, shared by every command that compiles.
#[derive(Clone, Debug, clap::Args)]
struct Semantics {
    /// When a direction is enforced: once a policy isolates it (default), always, or
    /// never.
    #[arg(long, value_enum, default_value_t = EnforcementArg::Default)]
    enforcement: EnforcementArg,
    /// Let ipBlock peers match pod addresses too, as upstream Kubernetes specifies (by
    /// default, as in Cilium, pods are matched only by their labels).
    #[arg(long)]
    ipblock_matches_pods: bool,
    /// A label key (or `prefix*`) that counts for identity although the default filter
    /// drops it. Repeatable.
    #[arg(long = "identity-include", value_name = "KEY")]
    identity_include: Vec<String>,
    /// A label key (or `prefix*`) that does not count for identity (unless a selector
    /// reads it). Repeatable.
    #[arg(long = "identity-exclude", value_name = "KEY")]
    identity_exclude: Vec<String>,
}

impl Semantics {
    fn options(&self) -> compiler::Options {
        compiler::Options {
            enforcement: self.enforcement.into(),
            ipblock_matches_pods: self.ipblock_matches_pods,
            labels: compiler::identity::LabelFilter {
                include: self.identity_include.clone(),
                exclude: self.identity_exclude.clone(),
            },
            ..compiler::Options::default()
        }
    }
}

/// Entry limits per table, below the datapath maps' capacities.
#[derive(Debug, clap::Args)]
struct CapacityArgs {
    /// Most policy entries allowed (default: the datapath map's capacity).
    #[arg(long)]
    max_policy_entries: Option<usize>,
    /// Most CIDR prefixes shorter than an address allowed (default: the ipcache map's
    /// capacity).
    #[arg(long)]
    max_ipcache_entries: Option<usize>,
    /// Most full-length addresses (pods, nodes, /32 and /128 CIDRs) allowed (default:
    /// the hosts map's capacity).
    #[arg(long)]
    max_host_entries: Option<usize>,
}

impl CapacityArgs {
    fn apply(&self, mut options: compiler::Options) -> compiler::Options {
        let limits = [
            (self.max_policy_entries, &mut options.capacity.policy),
            (self.max_ipcache_entries, &mut options.capacity.ipcache),
            (self.max_host_entries, &mut options.capacity.hosts),
        ];
        for (given, limit) in limits {
            if let Some(n) = given {
                *limit = n;
            }
        }
        options
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum TraceFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Compile manifests (files, directories, `-` for stdin) into an artifact.
    Compile {
        /// Manifest files or directories: Namespaces, Pods and NetworkPolicies.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Where to write the artifact.
        #[arg(short, long)]
        output: PathBuf,
        /// Print entries per table.
        #[arg(long)]
        stats: bool,
        /// Identity lock file: numbers in it are kept, and it is rewritten with the
        /// numbers of this compile. Created when missing. Commit it.
        #[arg(long)]
        lock: Option<PathBuf>,
        /// Forget retired identity numbers in the lock file, so they can be reused.
        #[arg(long, requires = "lock")]
        prune_retired: bool,
        #[command(flatten)]
        capacity: CapacityArgs,
        #[command(flatten)]
        semantics: Semantics,
    },
    /// Check manifests and report every problem, without writing anything.
    Lint {
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Fail (exit 1) on warnings too.
        #[arg(long)]
        deny_warnings: bool,
        /// Also warn about pods that no policy isolates.
        #[arg(long)]
        warn_unisolated: bool,
        /// Output format: rendered text on stderr, or a JSON / SARIF 2.1.0 report on
        /// stdout.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// The same limits as `compile`, so CI can check the headroom it wants.
        #[command(flatten)]
        capacity: CapacityArgs,
        #[command(flatten)]
        semantics: Semantics,
    },
    /// Explain why a flow is allowed or denied: the deciding policy and rule per
    /// direction, and the compiled tables' answer beside the reference's.
    Trace {
        /// Manifests, as for `compile`.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Source: an IP, `namespace/pod`, `namespace/workload` or `namespace:selector`
        /// (the first pod that matches; `key=value` terms that no pod matches stand for
        /// a pod with exactly those labels, which need not exist).
        #[arg(long)]
        from: String,
        /// Destination, in the same forms.
        #[arg(long)]
        to: String,
        /// tcp, udp, sctp, icmp, icmpv6 or a protocol number.
        #[arg(long, default_value = "tcp")]
        protocol: String,
        /// Destination port (or ICMP type).
        #[arg(long)]
        port: Option<u16>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = TraceFormat::Human)]
        format: TraceFormat,
        #[command(flatten)]
        semantics: Semantics,
    },
    /// Print the content of an artifact.
    Inspect { artifact: PathBuf },
    /// List every allowed connection between workloads, bare pods and outside address
    /// ranges, with the protocols and ports allowed.
    Connectivity {
        /// Manifests, as for `compile`.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Output format (JSON schema: docs/connectivity.md).
        #[arg(long, value_enum, default_value_t = connectivity::OutputFormat::Txt)]
        format: connectivity::OutputFormat,
        /// Write here instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        semantics: Semantics,
    },
    /// Compare two policy states (manifests or artifacts): connections added, removed
    /// and changed, and the map operations from OLD to NEW. Exit 0 when equal, 1 when
    /// different, 2 on error.
    Diff {
        /// The state before: an artifact file, or a manifest file or directory.
        old: PathBuf,
        /// The state after, in either form.
        new: PathBuf,
        /// Output format (JSON schema: docs/connectivity.md).
        #[arg(long, value_enum, default_value_t = diff::DiffFormat::Txt)]
        format: diff::DiffFormat,
        #[command(flatten)]
        semantics: Semantics,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("POLICYC_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Compile { inputs, output, stats, lock, prune_retired, capacity, semantics } => {
            let options = capacity.apply(semantics.options());
            compile(&inputs, &output, stats, lock.as_deref(), prune_retired, options)
        }
        Command::Lint { inputs, deny_warnings, warn_unisolated, format, capacity, semantics } => {
            let options = compiler::lint::LintOptions { unisolated_pods: warn_unisolated };
            let compile_options = capacity.apply(semantics.options());
            lint(&inputs, deny_warnings, options, format, &compile_options)
        }
        Command::Inspect { artifact } => inspect(&artifact),
        Command::Connectivity { inputs, format, output, semantics } => {
            connectivity::run(&inputs, format, output.as_deref(), &semantics.options())
        }
        Command::Diff { old, new, format, semantics } => {
            diff::run(&old, &new, format, &semantics.options())
        }
        Command::Trace { inputs, from, to, protocol, port, format, semantics } => {
            let query = (from.as_str(), to.as_str(), protocol.as_str(), port);
            run_trace(&inputs, query, format == TraceFormat::Json, &semantics.options())
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Reads and parses inputs; prints diagnostics to stderr; returns counts of errors and
/// warnings with the sources and bundle.
fn front_end(inputs: &[PathBuf]) -> anyhow::Result<(Sources, policy_lang::Bundle)> {
    let (sources, read_diags) =
        policy_lang::manifest::read_inputs(inputs).context("reading inputs")?;
    let mut bundle = policy_lang::load_sources(&sources);
    bundle.diagnostics.splice(0..0, read_diags);
    Ok((sources, bundle))
}

fn report(sources: &Sources, diagnostics: &[policy_lang::Diagnostic]) -> (usize, usize) {
    let mut stderr = std::io::stderr().lock();
    let (mut errors, mut warnings) = (0, 0);
    for diag in diagnostics {
        match diag.severity() {
            Severity::Error => errors += 1,
            Severity::Warning => warnings += 1,
            Severity::Note => {}
        }
        let _ = writeln!(stderr, "{}", diag.render(sources));
    }
    (errors, warnings)
}

fn compile(
    inputs: &[PathBuf],
    output: &PathBuf,
    stats: bool,
    lock_path: Option<&std::path::Path>,
    prune_retired: bool,
    mut options: compiler::Options,
) -> anyhow::Result<ExitCode> {
    if let Some(path) = lock_path.filter(|p| p.exists()) {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        options.lock = compiler::lock::Lock::parse(&text)
            .with_context(|| format!("reading {}", path.display()))?;
        if prune_retired {
            options.lock.retired.clear();
        }
    }
    let (sources, bundle) = front_end(inputs)?;
    let compilation = compiler::compile_with(&sources, &bundle, &options);
    let mut diagnostics = bundle.diagnostics.clone();
    diagnostics.extend(compilation.diagnostics.iter().cloned());
    let (errors, warnings) = report(&sources, &diagnostics);
    if errors > 0 {
        let _ = writeln!(
            std::io::stderr(),
            "error: {errors} error(s), {warnings} warning(s); no artifact written"
        );
        return Ok(ExitCode::from(1));
    }
    let bytes = compilation.artifact.encode();
    // Write beside the target and rename, so a reader never sees half an artifact.
    let tmp = output.with_extension("tmp");
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, output).with_context(|| format!("renaming to {}", output.display()))?;
    if let Some(path) = lock_path {
        let text = compilation.lock.render();
        if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
    }

    let s = &compilation.stats;
    let mut out = std::io::stdout().lock();
    // Full-length addresses and shorter prefixes go to two datapath maps with their own
    // capacities (`--max-host-entries`, `--max-ipcache-entries`), so each is counted
    // on its own.
    writeln!(
        out,
        "wrote {} ({} bytes): {} endpoints, {} identities, {} policy tables, {} policy entries, {} host entries, {} ipcache entries",
        output.display(),
        bytes.len(),
        s.endpoints,
        s.identities,
        s.tables,
        s.policy_entries,
        s.host_entries,
        s.ipcache_entries
    )?;
    if stats {
        let c = &options.capacity;
        for (map, used, limit) in [
            ("policy", s.policy_entries, c.policy),
            ("hosts", s.host_entries, c.hosts),
            ("ipcache", s.ipcache_entries, c.ipcache),
        ] {
            writeln!(out, "  {map} map: {used} of {limit} entries")?;
        }
        let mut per_table: std::collections::BTreeMap<u32, usize> = Default::default();
        for (key, _) in &compilation.artifact.policy {
            *per_table.entry(key.table).or_default() += 1;
        }
        for (table, n) in per_table {
            let users: Vec<&str> = compilation
                .artifact
                .endpoints
                .iter()
                .filter(|e| e.ingress_table == table || e.egress_table == table)
                .map(|e| e.name.as_str())
                .collect();
            // A table shared by thousands of pods names a few and counts the rest.
            let shown = users.iter().take(3).copied().collect::<Vec<_>>().join(", ");
            let more = users.len().saturating_sub(3);
            let rest = if more > 0 { format!(" and {more} more") } else { String::new() };
            writeln!(out, "  table {table}: {n} entries, used by {shown}{rest}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn lint(
    inputs: &[PathBuf],
    deny_warnings: bool,
    options: compiler::lint::LintOptions,
    format: Format,
    compile_options: &compiler::Options,
) -> anyhow::Result<ExitCode> {
    let (sources, bundle) = front_end(inputs)?;
    let compilation = compiler::compile_with(&sources, &bundle, compile_options);
    let mut diagnostics = bundle.diagnostics.clone();
    diagnostics.extend(compilation.diagnostics.iter().cloned());
    // Lints judge what the tables will enforce; with errors in the inputs that is not
    // what their authors meant, and the warnings would only be noise after the errors.
    if !bundle.has_errors() {
        diagnostics.extend(compiler::lint::lint(&sources, &bundle, &compilation, options));
    }
    let count = |s: Severity| diagnostics.iter().filter(|d| d.severity() == s).count();
    let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
    match format {
        Format::Human => {
            report(&sources, &diagnostics);
            let _ = writeln!(std::io::stderr(), "{errors} error(s), {warnings} warning(s)");
        }
        Format::Json => {
            let value = policy_lang::report::json(&diagnostics, &sources);
            writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&value)?)?;
        }
        Format::Sarif => {
            let value =
                policy_lang::report::sarif(&diagnostics, &sources, env!("CARGO_PKG_VERSION"));
            writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&value)?)?;
        }
    }
    Ok(if errors > 0 || (deny_warnings && warnings > 0) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn run_trace(
    inputs: &[PathBuf],
    (from, to, protocol, port): (&str, &str, &str, Option<u16>),
    json: bool,
    options: &compiler::Options,
) -> anyhow::Result<ExitCode> {
    let (sources, bundle) = front_end(inputs)?;
    if bundle.has_errors() {
        report(&sources, &bundle.diagnostics);
        anyhow::bail!("the inputs have errors; fix them before tracing");
    }
    let compilation = compiler::compile_with(&sources, &bundle, options);
    let proto = trace::parse_protocol(protocol)?;
    let from = trace::resolve(from, &bundle).context("resolving --from")?;
    let to = trace::resolve(to, &bundle).context("resolving --to")?;
    let query = trace::Query { from, to, proto, port };
    let agree = trace::trace(&bundle, &compilation, &query, options, json)?;
    Ok(if agree { ExitCode::SUCCESS } else { ExitCode::from(3) })
}

fn inspect(path: &PathBuf) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let artifact =
        Artifact::decode(&bytes).with_context(|| format!("decoding {}", path.display()))?;
    let mut out = std::io::stdout().lock();
    write!(out, "{}", compiler::render::render(&artifact))?;
    Ok(ExitCode::SUCCESS)
}
