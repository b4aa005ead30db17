//! The node operations: install, apply, uninstall and status, over a pin directory.
//!
//! `apply` runs these phases, each in its own tracing span:
//! 1. resolve: bindings against the artifact and the network namespace (nothing in the
//!    kernel is touched before this succeeds);
//! 2. prepare: bpffs, the pin directory and its lock, existing map pins checked against
//!    the object, the object loaded with its maps created or reused by pin;
//! 3. plan: the live maps read and compared with the desired state;
//! 4. switch: the new state written into the idle generation slot, the generation
//!    flipped, and the packets of the old generation waited for (see [`crate::plan`]);
//! 5. links: programs attached to interfaces that lack them (after the switch, so the
//!    first packet already meets the complete policy) and detached from interfaces no
//!    longer bound;
//! 6. level: the retired slot brought level with the live one, stale keys deleted.
//!
//! The bindings of an apply are the node's complete set: an interface bound before and
//! not named now loses its links and its endpoint entry.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    path::{Path, PathBuf},
};

use aya::{Ebpf, EbpfLoader, maps::MapData, programs::SchedClassifier};
use compiler::artifact::Artifact;
use datapath::{Config, EndpointPolicy, MetricsValue, Reason, map_names, slot_of};

use crate::{
    bindings::{self, Binding, BoundInterface},
    error::{Result, RuntimeError},
    kernel::{self, KernelMaps, open_checked},
    links::{self, LinkState},
    maps::{MapBackend, MapName},
    pins::{DirLock, Hook, PinDir, check_bpffs},
    plan::{MapChanges, Plan},
    spec::ObjectSpec,
    state::{LiveMaps, MapState},
    store::{ArtifactStore, NodeBindings, ProgramCache, ProgramIdentity},
    sync::ConfigMapping,
};

/// The maps the object pins by name, hence the map pins `uninstall` removes.
const PINNED_MAPS: [&str; 10] = [
    map_names::CONFIG,
    map_names::ENDPOINTS,
    map_names::HOSTS,
    map_names::IPCACHE,
    map_names::POLICY,
    map_names::CONNTRACK,
    map_names::FRAGS,
    map_names::METRICS,
    map_names::EVENTS,
    map_names::EVENTS_STATE,
];

/// Verdict events each CPU may send per second, and at once after a quiet spell, unless
/// [`ApplyOptions`] says otherwise: enough to see every drop of a misconfigured pod,
/// too few for a flood of drops to cost the node noticeable CPU.
pub const DEFAULT_EVENT_RATE: u32 = 1000;
pub const DEFAULT_EVENT_BURST: u32 = 1000;

/// Datapath settings an apply writes with the artifact, and where it keeps a copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyOptions {
    /// The state directory whose artifact store receives the applied artifact.
    pub state_dir: PathBuf,
    /// Verdict events per second and CPU; 0 sends none.
    pub event_rate: u32,
    /// Events a CPU may send at once.
    pub event_burst: u32,
    /// Also send an event for every flow policy newly allows, not only for drops.
    pub events_allowed: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            state_dir: PathBuf::from(crate::store::DEFAULT_STATE_DIR),
            event_rate: DEFAULT_EVENT_RATE,
            event_burst: DEFAULT_EVENT_BURST,
            events_allowed: false,
        }
    }
}

/// What `install` found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstallReport {
    /// Map pins created by this run.
    pub created: Vec<String>,
    /// Map pins that existed with the right layout and were kept with their entries.
    pub reused: Vec<String>,
    /// Map pins of another layout: the whole map set was made again, filled, put under
    /// the links' programs and pinned in their place.
    pub migrated: Vec<String>,
}

/// What `apply` changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// The applied artifact's source digest.
    pub source_digest: [u8; 32],
    pub install: InstallReport,
    /// Keys added or changed and keys removed, for the maps an artifact fills.
    pub changes: Vec<(MapName, MapChanges)>,
    /// Map operations performed: entry writes and deletes, and the generation flip.
    pub operations: usize,
    /// The live generation before and after the apply (equal when nothing changed).
    pub generations: (u32, u32),
    /// Links created by this run.
    pub attached: Vec<(String, Hook)>,
    /// Links that were already in place with this build's program.
    pub kept: Vec<(String, Hook)>,
    /// Links that carried another program (an older datapath) and now carry this
    /// build's, replaced in place with no moment without a program.
    pub replaced: Vec<(String, Hook)>,
    /// Links removed because their interface is no longer bound (or is gone).
    pub detached: Vec<(String, Hook)>,
}

/// What `uninstall` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UninstallReport {
    /// Whether the pin directory existed at all.
    pub found: bool,
    pub links: Vec<PathBuf>,
    pub maps: Vec<PathBuf>,
    /// Files in the pin directory that policyc did not create, left in place (the
    /// directory is then kept too).
    pub foreign: Vec<PathBuf>,
    /// Whether the pin directory itself was removed.
    pub removed_dir: bool,
    /// Artifacts removed from the state directory's store.
    pub stored: Vec<PathBuf>,
}

/// The node as `status` sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// The live generation.
    pub generation: u32,
    /// The live artifact's source digest and checksum (zero before the first apply).
    pub source_digest: [u8; 32],
    pub artifact_checksum: [u8; 32],
    /// Entries and capacity of each keyed map.
    pub maps: Vec<MapUsage>,
    /// Packet and byte counters per reason, summed over CPUs and over the bound
    /// interfaces plus the row of unbound ones.
    pub metrics: Vec<(Reason, MetricsValue)>,
    /// Every interface with an endpoint entry or a link pin, by name.
    pub interfaces: Vec<InterfaceStatus>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapUsage {
    pub map: MapName,
    pub entries: usize,
    pub capacity: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceStatus {
    /// The name, or `ifindex N` for an endpoint entry whose interface is gone.
    pub name: String,
    pub ifindex: Option<u32>,
    /// The endpoint in the live generation, if the interface is bound.
    pub endpoint: Option<EndpointPolicy>,
    /// The interface is a node's uplink bound to its host endpoint
    /// ([`datapath::EP_F_HOST`]): its programs are attached the other way round.
    pub host: bool,
    /// Hooks with a link pin.
    pub links: Vec<Hook>,
    /// The interface's counters per reason (empty without an endpoint entry).
    pub metrics: Vec<(Reason, MetricsValue)>,
}

/// A prepared node: pins checked, the object loaded, the directory locked.
struct Node {
    pins: PinDir,
    /// Where the loaded object's maps are pinned: the pin directory itself, or its
    /// staging directory while maps of another layout are migrated.
    maps: PinDir,
    spec: ObjectSpec,
    ebpf: Ebpf,
    report: InstallReport,
    programs_loaded: bool,
    _lock: DirLock,
}

impl Node {
    fn prepare(pin_dir: &Path) -> Result<Node> {
        let _span = tracing::info_span!("prepare", pin_dir = %pin_dir.display()).entered();
        let pins = PinDir::new(pin_dir);
        pins.create()?;
        let lock = pins.lock()?;
        let spec = ObjectSpec::embedded()?;

        // aya reuses a pinned map whatever its layout: check every existing pin first. A
        // map of another layout (left by another build of the datapath) is not reused: the
        // whole set is made afresh in the staging directory and migrated to (see apply).
        let mut report = InstallReport::default();
        for name in PINNED_MAPS {
            let path = pins.map(name);
            if path.symlink_metadata().is_err() {
                report.created.push(name.to_owned());
                continue;
            }
            match open_checked(&path, name, &spec) {
                Ok(_) => report.reused.push(name.to_owned()),
                Err(RuntimeError::LayoutMismatch { pinned, expected, .. }) => {
                    tracing::info!(map = name, %pinned, %expected, "layout changed: migrating");
                    report.migrated.push(name.to_owned());
                }
                Err(other) => return Err(other),
            }
        }
        let maps = if report.migrated.is_empty() {
            pins.clone()
        } else {
            // Whatever an interrupted migration left there is made again from scratch.
            let staging = PinDir::new(pins.staging());
            remove_dir_pins(staging.root())?;
            staging.create()?;
            report.created.clear();
            report.reused.clear();
            staging
        };

        let ebpf = EbpfLoader::new()
            .default_map_pin_directory(maps.root())
            .load(datapath::OBJECT)
            .map_err(|source| RuntimeError::LoadObject {
                dir: maps.root().to_owned(),
                source: Box::new(source),
            })?;
        tracing::debug!(created = ?report.created, reused = ?report.reused, "maps ready");
        Ok(Node { pins, maps, spec, ebpf, report, programs_loaded: false, _lock: lock })
    }

    /// Loads both programs into the kernel, once.
    fn load_programs(&mut self) -> Result<()> {
        if self.programs_loaded {
            return Ok(());
        }
        let _span = tracing::info_span!("load_programs").entered();
        for hook in Hook::BOTH {
            self.program(hook)?.load().map_err(|source| RuntimeError::LoadProgram {
                name: hook.program(),
                source: Box::new(source),
            })?;
        }
        self.programs_loaded = true;
        Ok(())
    }

    fn program(&mut self, hook: Hook) -> Result<&mut SchedClassifier> {
        let name = hook.program();
        let missing = || RuntimeError::MissingInObject { kind: "program", name: name.to_owned() };
        let program = self.ebpf.program_mut(name).ok_or_else(missing)?;
        program.try_into().map_err(|_| RuntimeError::MissingInObject {
            kind: "tc classifier program",
            name: name.to_owned(),
        })
    }

    /// The tag and map ids of this build's program at `hook`, loaded over the pinned maps
    /// (through the verifier), remembered in `cache` for the next apply.
    fn loaded_identity(&mut self, hook: Hook, cache: &ProgramCache) -> Result<ProgramIdentity> {
        self.load_programs()?;
        let info_err =
            |source| RuntimeError::ProgramInfo { name: hook.program(), source: Box::new(source) };
        let ours = self.program(hook)?.info().map_err(info_err)?;
        let mut maps = ours.map_ids().map_err(info_err)?.unwrap_or_default();
        maps.sort_unstable();
        let identity = (ours.tag(), maps);
        cache.put(hook.program(), &identity);
        Ok(identity)
    }

    /// The ids of the maps pinned where this run's object put its maps.
    fn pinned_map_ids(&self) -> BTreeSet<u32> {
        PINNED_MAPS
            .iter()
            .filter_map(|name| MapData::from_pin(self.maps.map(name)).ok()?.info().ok())
            .map(|info| info.id())
            .collect()
    }

    /// Attaches missing links of the bound interfaces, replaces stale ones, and removes
    /// the links of interfaces that are not bound.
    fn sync_links(
        &mut self,
        bound: &[BoundInterface],
        cache: &ProgramCache,
        report: &mut ApplyReport,
    ) -> Result<()> {
        let _span = tracing::info_span!("links").entered();
        let pinned = self.pinned_map_ids();
        for interface in bound {
            for hook in Hook::BOTH {
                let name = interface.interface.as_str();
                // The program for this hook: a node's uplink carries them swapped.
                let program = hook.program_hook(interface.host);
                match links::link_state(&self.pins, name, hook)? {
                    LinkState::Live { program_id } => {
                        // Kept only if it is this build's code over the pinned maps: as
                        // remembered from an earlier apply (its maps all still pinned),
                        // or else as loading this build's program shows.
                        let attached = links::program_identity(program_id)?;
                        let remembered = cache
                            .get(program.program())
                            .filter(|(_, maps)| maps.iter().all(|id| pinned.contains(id)));
                        let ours = match remembered {
                            Some(known) if attached.as_ref() == Some(&known) => known,
                            _ => self.loaded_identity(program, cache)?,
                        };
                        if attached == Some(ours) {
                            report.kept.push((name.to_owned(), hook));
                        } else {
                            let pins = self.pins.clone();
                            links::replace(self.program(program)?, program, &pins, name, hook)?;
                            report.replaced.push((name.to_owned(), hook));
                        }
                        continue;
                    }
                    LinkState::Stale => {
                        tracing::debug!(
                            interface = name,
                            hook = hook.name(),
                            "replacing stale link pin"
                        );
                        links::unpin(&self.pins.link(name, hook))?;
                    }
                    LinkState::Missing => {}
                }
                self.load_programs()?;
                let pins = self.pins.clone();
                links::attach(self.program(program)?, program, &pins, name, hook)?;
                report.attached.push((name.to_owned(), hook));
            }
        }

        let wanted: BTreeSet<&str> = bound.iter().map(|b| b.interface.as_str()).collect();
        for (interface, hook, path) in self.pins.link_pins()? {
            if !wanted.contains(interface.as_str()) {
                tracing::debug!(interface, hook = hook.name(), "detaching unbound interface");
                links::unpin(&path)?;
                report.detached.push((interface, hook));
            }
        }
        Ok(())
    }
}

/// Prepares the node without applying anything: checks bpffs, creates the pin
/// directory, checks or creates the map pins, and loads both programs (so a verifier
/// rejection shows here). Nothing is attached.
pub fn install(pin_dir: &Path) -> Result<InstallReport> {
    let _span = tracing::info_span!("install").entered();
    let mut node = Node::prepare(pin_dir)?;
    node.load_programs()?;
    Ok(node.report)
}

/// Makes the node enforce `artifact` on the bound interfaces; see the module
/// documentation for the phases. The maps are compared with their live content, so an
/// entry changed or added behind policyc's back is repaired, and an apply that changes
/// nothing writes nothing.
pub fn apply(
    pin_dir: &Path,
    artifact: &Artifact,
    bindings: &[Binding],
    options: &ApplyOptions,
) -> Result<ApplyReport> {
    let _span = tracing::info_span!("apply", pin_dir = %pin_dir.display()).entered();
    // The node's own addresses: the host identity in its maps, whatever the artifact says.
    let local = bindings::local_addresses_in_current_netns()
        .map_err(|source| RuntimeError::LocalAddresses { source })?;
    tracing::debug!(?local, "the node's own addresses");
    let resolve = |artifact, bindings| {
        let _span = tracing::info_span!("resolve").entered();
        let mut bound = bindings::resolve(artifact, bindings, bindings::ifindex_in_current_netns)?;
        if bound.iter().any(|b| b.host) {
            bindings::add_local_addresses(&mut bound, &local);
        }
        Ok::<_, RuntimeError>(bound)
    };
    let bound = resolve(artifact, bindings)?;
    let node = Node::prepare(pin_dir)?;
    if !node.report.migrated.is_empty()
        && let Some((old, old_bindings)) = enforced_now(&node, &checksum_of(artifact), options)
        && let Ok(old_bound) = resolve(&old, &old_bindings)
    {
        // Links move to the new maps one at a time. Moving them with what the node
        // enforces now, then switching the whole node to the new artifact at once, keeps
        // a flow between two of its pods from meeting the old rules at one end and the
        // new ones at the other meanwhile.
        tracing::info!("migrating with the live artifact first");
        let first = apply_on(node, &old, &old_bound, &old_bindings, &local, options)?;
        let mut report =
            apply_on(Node::prepare(pin_dir)?, artifact, &bound, bindings, &local, options)?;
        report.install.migrated = first.install.migrated;
        report.replaced.extend(first.replaced);
        report.attached.extend(first.attached);
        return Ok(report);
    }
    apply_on(node, artifact, &bound, bindings, &local, options)
}

/// The artifact and bindings the node enforces now, when the pinned config map is
/// readable, names another artifact than `target` and the store has it.
fn enforced_now(
    node: &Node,
    target: &[u8; 32],
    options: &ApplyOptions,
) -> Option<(Artifact, Vec<Binding>)> {
    let path = node.pins.map(map_names::CONFIG);
    let config =
        ConfigMapping::new(open_checked(&path, map_names::CONFIG, &node.spec).ok()?, &path)
            .ok()?
            .read();
    if config.artifact_checksum == *target || config.artifact_checksum == [0; 32] {
        return None;
    }
    let old = ArtifactStore::new(&options.state_dir).load(&config.artifact_checksum).ok()??;
    let bindings = NodeBindings::new(&options.state_dir).load().ok()??;
    Some((old, bindings))
}

/// The checksum an artifact's encoding ends with.
fn checksum_of(artifact: &Artifact) -> [u8; 32] {
    checksum(&artifact.encode())
}

/// The checksum at the end of an artifact's encoding.
fn checksum(bytes: &[u8]) -> [u8; 32] {
    let mut checksum = [0u8; 32];
    checksum.copy_from_slice(&bytes[bytes.len().saturating_sub(32)..]);
    checksum
}

/// `apply` on a prepared node, with the bindings resolved and the node's own addresses.
fn apply_on(
    mut node: Node,
    artifact: &Artifact,
    bound: &[BoundInterface],
    bindings: &[Binding],
    local: &[std::net::IpAddr],
    options: &ApplyOptions,
) -> Result<ApplyReport> {
    let desired = MapState::desired(artifact, bound)?.with_own_addresses(local);
    let mut maps = KernelMaps::open(&node.maps, &node.spec)?;
    let migrating = !node.report.migrated.is_empty();
    if migrating {
        // Replies of connections open now keep passing on the new maps.
        let copied = kernel::copy_flows(&node.pins, &mut maps, &node.spec)?;
        tracing::info!(copied, "conntrack entries carried over");
    }
    let plan = {
        let _span = tracing::info_span!("plan").entered();
        Plan::new(&LiveMaps::read(&maps)?, &desired)?
    };
    let bytes = artifact.encode();
    let checksum = checksum(&bytes);
    let config = Config {
        generation: plan.next_generation(),
        flags: if options.events_allowed { datapath::CONFIG_EVENTS_ALLOWED } else { 0 },
        event_rate: options.event_rate,
        event_burst: options.event_burst,
        source_digest: artifact.source_digest,
        artifact_checksum: checksum,
    };
    // Stored before it goes live, so that every event of it can be explained.
    let store = ArtifactStore::new(&options.state_dir);
    store.save(&checksum, &bytes)?;
    let mut report = ApplyReport {
        source_digest: artifact.source_digest,
        install: node.report.clone(),
        changes: plan.changes.clone(),
        operations: plan.op_count(),
        generations: (plan.generation, plan.next_generation()),
        ..ApplyReport::default()
    };

    tracing::info!(operations = report.operations, flip = plan.flip, "writing the maps");
    plan.switch(&mut maps, &config)?;
    if maps.config()? != config {
        // No flip (the maps already said this), but new settings or a new digest.
        maps.set_config(&config)?;
    }
    node.sync_links(bound, &ProgramCache::new(&options.state_dir), &mut report)?;
    plan.settle(&mut maps)?;
    if migrating {
        // Every link now runs a program over the new maps: pin them in the old ones' place.
        // Killed half way, the next apply finds programs whose maps are not the pinned
        // ones and replaces them again (see `sync_links`).
        swap_pins(&node.pins)?;
    }
    store.prune(&checksum)?;
    NodeBindings::new(&options.state_dir).save(bindings)?;
    tracing::info!(operations = report.operations, generation = plan.next_generation(), "applied");
    Ok(report)
}

/// The artifact live on this node: the stored one whose checksum the config map holds.
pub fn live_artifact(pin_dir: &Path, state_dir: &Path) -> Result<Artifact> {
    let pins = PinDir::new(pin_dir);
    check_bpffs(pin_dir)?;
    if pins.map(map_names::CONFIG).symlink_metadata().is_err() {
        return Err(RuntimeError::NotInstalled { path: pin_dir.to_owned() });
    }
    let maps = KernelMaps::open(&pins, &ObjectSpec::embedded()?)?;
    let checksum = maps.config()?.artifact_checksum;
    let store = ArtifactStore::new(state_dir);
    store.load(&checksum)?.ok_or_else(|| RuntimeError::NoLiveArtifact {
        dir: store.dir().to_owned(),
        checksum: crate::store::hex(&checksum),
    })
}

/// Binds one more interface (or rebinds it), keeping the node's other bindings, and
/// applies the live artifact with them: only the entries that change are written.
pub fn bind(pin_dir: &Path, binding: Binding, options: &ApplyOptions) -> Result<ApplyReport> {
    let _span = tracing::info_span!("bind", interface = %binding.interface).entered();
    let artifact = live_artifact(pin_dir, &options.state_dir)?;
    let mut bindings = NodeBindings::new(&options.state_dir).load()?.unwrap_or_default();
    bindings.retain(|b| b.interface != binding.interface);
    bindings.push(binding);
    apply(pin_dir, &artifact, &bindings, options)
}

/// Unbinds an interface (its links and endpoint entry go, and with them the addresses
/// of a pod the artifact does not list) and applies the live artifact without it.
pub fn unbind(pin_dir: &Path, interface: &str, options: &ApplyOptions) -> Result<ApplyReport> {
    let _span = tracing::info_span!("unbind", interface).entered();
    let artifact = live_artifact(pin_dir, &options.state_dir)?;
    let mut bindings = NodeBindings::new(&options.state_dir).load()?.unwrap_or_default();
    let before = bindings.len();
    bindings.retain(|b| b.interface != interface);
    if bindings.len() == before {
        return Err(RuntimeError::NotBound { interface: interface.to_owned() });
    }
    apply(pin_dir, &artifact, &bindings, options)
}

/// Removes what policyc pinned in `pin_dir`: link pins first (which detaches the
/// programs), then map pins, then the directory if nothing else is in it; and the
/// artifacts it stored in `state_dir`. A missing directory is already uninstalled.
pub fn uninstall(pin_dir: &Path, state_dir: &Path) -> Result<UninstallReport> {
    let _span = tracing::info_span!("uninstall", pin_dir = %pin_dir.display()).entered();
    let mut report = UninstallReport {
        stored: ArtifactStore::new(state_dir).clear()?,
        ..UninstallReport::default()
    };
    if pin_dir.symlink_metadata().is_err() {
        return Ok(report);
    }
    report.found = true;
    // Never remove anything outside bpffs, whatever the caller passed.
    check_bpffs(pin_dir)?;
    let pins = PinDir::new(pin_dir);
    let lock = pins.lock()?;

    for (_, _, path) in pins.link_pins()? {
        links::unpin(&path)?;
        report.links.push(path);
    }
    // Maps of an interrupted migration.
    remove_dir_pins(&pins.staging())?;
    for name in PINNED_MAPS {
        let path = pins.map(name);
        if path.symlink_metadata().is_ok() {
            remove(&path, |p| fs::remove_file(p))?;
            report.maps.push(path);
        }
    }

    let links_dir = pins.links();
    if links_dir.is_dir() {
        report.foreign.extend(entries(&links_dir)?);
        if report.foreign.is_empty() {
            remove(&links_dir, |p| fs::remove_dir(p))?;
        }
    }
    report.foreign.extend(entries(pin_dir)?.into_iter().filter(|p| *p != links_dir));
    drop(lock);
    if report.foreign.is_empty() {
        match fs::remove_dir(pin_dir) {
            Ok(()) => report.removed_dir = true,
            // The root of a bpffs mount cannot be removed; its content is gone anyway.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(source) => return Err(RuntimeError::Remove { path: pin_dir.to_owned(), source }),
        }
    }
    Ok(report)
}

/// Reads the maps in `pin_dir`: entries against capacity, counters, bound interfaces.
pub fn status(pin_dir: &Path) -> Result<Status> {
    let _span = tracing::info_span!("status", pin_dir = %pin_dir.display()).entered();
    check_bpffs(pin_dir)?;
    let pins = PinDir::new(pin_dir);
    if pins.map(map_names::ENDPOINTS).symlink_metadata().is_err() {
        return Err(RuntimeError::NotInstalled { path: pin_dir.to_owned() });
    }
    let maps = KernelMaps::open(&pins, &ObjectSpec::embedded()?)?;
    status_of(&maps, &pins.link_pins()?, bindings::interface_name)
}

/// `status` over any backend; `name_of` names an ifindex.
fn status_of(
    maps: &impl MapBackend,
    link_pins: &[(String, Hook, PathBuf)],
    name_of: impl Fn(u32) -> Option<String>,
) -> Result<Status> {
    let config = maps.config()?;
    let mut status = Status {
        generation: config.generation,
        source_digest: config.source_digest,
        artifact_checksum: config.artifact_checksum,
        ..Status::default()
    };
    for map in MapName::ALL {
        let entries = maps.len(map)?;
        status.maps.push(MapUsage { map, entries, capacity: map.capacity() });
    }

    let live = LiveMaps::read(maps)?;
    let mut totals: BTreeMap<Reason, MetricsValue> = BTreeMap::new();
    let mut add = |counters: &[(Reason, MetricsValue)]| {
        for (reason, value) in counters {
            let total = totals.entry(*reason).or_default();
            total.packets += value.packets;
            total.bytes += value.bytes;
        }
    };
    add(&maps.metrics(0)?);

    let mut interfaces: BTreeMap<String, InterfaceStatus> = BTreeMap::new();
    // The host endpoint's copy for the pods' interfaces is no interface of its own.
    for (ifindex, info) in live.endpoints.iter().filter(|(i, _)| **i != datapath::HOST_ENDPOINT_KEY)
    {
        let name = name_of(*ifindex).unwrap_or_else(|| format!("ifindex {ifindex}"));
        let bound = info.slot[slot_of(live.generation)];
        let metrics = maps.metrics(info.metrics_row)?;
        add(&metrics);
        interfaces.insert(
            name.clone(),
            InterfaceStatus {
                name,
                ifindex: Some(*ifindex),
                endpoint: (bound.endpoint_id != 0).then_some(bound),
                host: info.flags & datapath::EP_F_HOST != 0,
                links: vec![],
                metrics,
            },
        );
    }
    for (interface, hook, _) in link_pins {
        let entry = interfaces.entry(interface.clone()).or_default();
        entry.name.clone_from(interface);
        entry.links.push(*hook);
    }
    status.metrics =
        Reason::ALL.iter().map(|r| (*r, totals.get(r).copied().unwrap_or_default())).collect();
    status.interfaces = interfaces.into_values().collect();
    Ok(status)
}

/// Moves every map pin of the staging directory over the pin of the same name, then
/// removes the staging directory.
fn swap_pins(pins: &PinDir) -> Result<()> {
    let staging = PinDir::new(pins.staging());
    for name in PINNED_MAPS {
        let (from, to) = (staging.map(name), pins.map(name));
        if from.symlink_metadata().is_err() {
            continue;
        }
        if to.symlink_metadata().is_ok() {
            remove(&to, |p| fs::remove_file(p))?;
        }
        fs::rename(&from, &to).map_err(|source| RuntimeError::Remove { path: from, source })?;
    }
    remove_dir_pins(staging.root())
}

/// Removes a directory of pins and everything in it, if it exists.
fn remove_dir_pins(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RuntimeError::Remove { path: dir.to_owned(), source }),
    }
}

fn remove(path: &Path, op: impl Fn(&Path) -> io::Result<()>) -> Result<()> {
    op(path).map_err(|source| RuntimeError::Remove { path: path.to_owned(), source })
}

fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let read_err = |source| RuntimeError::ReadDir { path: dir.to_owned(), source };
    let mut paths = fs::read_dir(dir)
        .map_err(read_err)?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<Vec<_>>>()
        .map_err(read_err)?;
    paths.sort();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use datapath::{EndpointInfo, Reason};

    use super::*;
    use crate::testing::FakeMaps;

    #[test]
    fn status_merges_endpoint_entries_and_link_pins_by_interface() {
        let mut maps = FakeMaps::default();
        maps.live.generation = 3;
        let bound = EndpointPolicy {
            endpoint_id: 1,
            identity: 256,
            ingress_table: 3,
            ..Default::default()
        };
        // Slot 1 is live at generation 3; interface 8 is unbound there.
        let info = |live, row| EndpointInfo {
            slot: [EndpointPolicy::default(), live],
            metrics_row: row,
            flags: 0,
        };
        maps.live.endpoints.insert(7, info(bound, 1));
        maps.live.endpoints.insert(8, info(EndpointPolicy::default(), 2));
        maps.metrics.insert((1, Reason::DropNoPolicy), MetricsValue { packets: 4, bytes: 240 });
        maps.metrics.insert((0, Reason::DropNoEndpoint), MetricsValue { packets: 1, bytes: 60 });
        maps.metrics.insert((9, Reason::DropNoPolicy), MetricsValue { packets: 100, bytes: 1 });
        let pins = [
            ("pw".to_owned(), Hook::Ingress, PathBuf::from("/p/links/pw_ingress")),
            ("pw".to_owned(), Hook::Egress, PathBuf::from("/p/links/pw_egress")),
            ("old".to_owned(), Hook::Ingress, PathBuf::from("/p/links/old_ingress")),
        ];

        let status = status_of(&maps, &pins, |i| (i == 7).then(|| "pw".to_owned())).unwrap();

        assert_eq!(status.generation, 3);
        let endpoints = status.maps.iter().find(|m| m.map == MapName::Endpoints).unwrap();
        assert_eq!((endpoints.entries, endpoints.capacity), (2, datapath::capacity::ENDPOINTS));
        let names: Vec<&str> = status.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["ifindex 8", "old", "pw"]);
        let pw = &status.interfaces[2];
        assert_eq!(
            (pw.ifindex, pw.endpoint, pw.links.clone()),
            (Some(7), Some(bound), vec![Hook::Ingress, Hook::Egress])
        );
        assert_eq!(status.interfaces[0].endpoint, None, "unbound in the live slot");
        assert_eq!(status.interfaces[1].endpoint, None);
        let total = |reason| status.metrics.iter().find(|(r, _)| *r == reason).unwrap().1.packets;
        assert_eq!(total(Reason::DropNoPolicy), 4, "row 9 belongs to no interface");
        assert_eq!(total(Reason::DropNoEndpoint), 1, "row 0 counts unbound interfaces");
        let pw_drops = pw.metrics.iter().find(|(r, _)| *r == Reason::DropNoPolicy).unwrap();
        assert_eq!(pw_drops.1.packets, 4);
    }
}
