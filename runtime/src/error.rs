//! The one error type of the runtime. Every message names the step that failed, and a
//! cause from below (an I/O or aya error) is attached as the source, never repeated in
//! the message, so a printed error chain shows each cause once.

use std::{io, path::PathBuf};

use aya::{
    EbpfError,
    maps::MapError,
    programs::{ProgramError, links::LinkError},
};

use crate::spec::MapLayout;

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The pin directory, or the nearest existing directory above it, is not on a bpf
    /// filesystem, so pins could not be created there (or what is there is no pin).
    #[error(
        "{} is not on a bpf filesystem (filesystem type {found:#x}); mount one with \
         `mount -t bpf bpf /sys/fs/bpf`, or choose a pin directory under a bpffs mount",
        path.display()
    )]
    NotBpffs { path: PathBuf, found: u64 },

    /// `statfs` failed on the pin directory or the directory above it.
    #[error("checking the filesystem of {}", path.display())]
    Statfs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The pin directory or its `links` subdirectory could not be created.
    #[error("creating pin directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The pin directory could not be opened or locked against a concurrent run.
    #[error("locking pin directory {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// `status` was asked about a pin directory that holds no maps.
    #[error("nothing is installed in {}: run `policyc-node apply` first", path.display())]
    NotInstalled { path: PathBuf },

    /// The datapath object embedded in this build could not be parsed.
    #[error("parsing the embedded datapath object")]
    ParseObject {
        #[source]
        source: aya_obj::ParseError,
    },

    /// The embedded datapath object lacks a map or program the runtime needs: the
    /// object and `datapath::map_names` / `datapath::program_names` disagree.
    #[error("the embedded datapath object has no {kind} named {name}")]
    MissingInObject { kind: &'static str, name: String },

    /// A pinned map exists but could not be opened or described.
    #[error("opening pinned map {}", path.display())]
    OpenMap {
        path: PathBuf,
        #[source]
        source: MapError,
    },

    /// A pinned map exists with another type, key size, value size, capacity or flags
    /// than the embedded object defines. aya would silently reuse it; `apply` migrates to
    /// a new map set instead, and the read-only commands refuse it.
    #[error(
        "pinned map {name} at {} is {pinned}, but this build's datapath defines {expected}; \
         `policyc-node apply` migrates the node to this build's maps",
        path.display()
    )]
    LayoutMismatch { name: String, path: PathBuf, pinned: MapLayout, expected: MapLayout },

    /// aya could not load the object: creating or reusing the pinned maps, or relocating
    /// the programs, failed.
    #[error("loading the datapath object with maps pinned in {}", dir.display())]
    LoadObject {
        dir: PathBuf,
        #[source]
        source: Box<EbpfError>,
    },

    /// The kernel refused a program (the verifier log is in the source).
    #[error("loading program {name} into the kernel")]
    LoadProgram {
        name: &'static str,
        #[source]
        source: Box<ProgramError>,
    },

    /// Attaching a program to an interface with tcx failed (tcx needs Linux 6.6).
    #[error("attaching program {program} to tc {hook} of interface {interface}")]
    Attach {
        program: &'static str,
        hook: &'static str,
        interface: String,
        #[source]
        source: Box<ProgramError>,
    },

    /// A new link could not be turned into a pinnable link or pinned.
    #[error("pinning the link of interface {interface} at {}", path.display())]
    PinLink {
        interface: String,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A link pin exists but could not be opened or described.
    #[error("opening pinned link {}", path.display())]
    OpenLink {
        path: PathBuf,
        #[source]
        source: Box<LinkError>,
    },

    /// The programs attached to an interface could not be listed.
    #[error("listing the tcx programs on tc {hook} of interface {interface}")]
    QueryLinks {
        interface: String,
        hook: &'static str,
        #[source]
        source: Box<ProgramError>,
    },

    /// The kernel's list of loaded programs could not be read.
    #[error("looking up loaded program {id}")]
    QueryProgram {
        id: u32,
        #[source]
        source: Box<ProgramError>,
    },

    /// The kernel could not describe a program this run loaded.
    #[error("describing program {name}")]
    ProgramInfo {
        name: &'static str,
        #[source]
        source: Box<ProgramError>,
    },

    /// A pin (map or link) or a pin directory could not be removed.
    #[error("removing {}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A directory of pins could not be listed.
    #[error("listing {}", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Reading keys or values of a map failed.
    #[error("reading map {map}")]
    ReadMap {
        map: &'static str,
        #[source]
        source: MapError,
    },

    /// Writing an entry failed; the map keeps every entry written before it, which is a
    /// state the update ordering allows, and a new apply continues from there.
    #[error("writing an entry of map {map}")]
    WriteMap {
        map: &'static str,
        #[source]
        source: MapError,
    },

    /// Deleting an entry failed; as for [`RuntimeError::WriteMap`], a new apply resumes.
    #[error("deleting an entry of map {map}")]
    DeleteMap {
        map: &'static str,
        #[source]
        source: MapError,
    },

    /// Waiting for the datapath programs in flight (after a generation flip) failed:
    /// making or updating the map-in-map whose update waits for them.
    #[error("waiting for the packets judged in the previous generation")]
    WaitForReaders {
        #[source]
        source: io::Error,
    },

    /// The config map could not be mapped into memory, or has an unexpected size.
    #[error("mapping the config map {} into memory", path.display())]
    MapConfig {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The node's artifact store could not be read or written.
    #[error("using the artifact store at {}", path.display())]
    Store {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The metrics address could not be bound.
    #[error("serving metrics on {addr}")]
    Metrics {
        addr: String,
        #[source]
        source: io::Error,
    },

    /// The number of possible CPUs, which sizes per-CPU values, could not be read.
    #[error("reading the number of possible CPUs")]
    Cpus {
        #[source]
        source: io::Error,
    },

    /// The update would not fit: the keys of the old and the new state are both in a map
    /// until the generation has flipped. Checked before anything is written.
    #[error(
        "map {map} would hold {needed} entries during the update (the old and the new keys \
         are both present until the switch), but its capacity is {capacity}"
    )]
    Capacity { map: &'static str, needed: usize, capacity: u32 },

    /// The artifact lists one key twice with different values.
    #[error("the artifact has two different values for {map} key {key}")]
    DuplicateKey { map: &'static str, key: String },

    /// An `--iface` argument is not `NAME=NAMESPACE/POD` or names an impossible interface.
    #[error("invalid interface binding {binding:?}: {reason}")]
    InvalidBinding { binding: String, reason: &'static str },

    /// The same interface is bound twice.
    #[error("interface {interface} is bound more than once")]
    DuplicateInterface { interface: String },

    /// The bindings name the host endpoints of more than one node: a node enforces its
    /// own host policy only, since its own addresses are the ones it gives the host
    /// identity.
    #[error("bindings name the host endpoints of several nodes ({}); bind only this node's", .endpoints.join(", "))]
    SeveralHostEndpoints { endpoints: Vec<String> },

    /// A binding names an endpoint the artifact does not have.
    #[error("the artifact has no endpoint {endpoint}{}", similar_names(.suggestions, *.known))]
    UnknownEndpoint { endpoint: String, suggestions: Vec<String>, known: usize },

    /// A pod the artifact does not list has a label set no identity of the artifact has
    /// (or no endpoint to take tables from): only a recompile can place it.
    #[error(
        "the artifact has no identity for the labels of {endpoint} ({labels}): add the pod \
         to the inventory, recompile and apply the new artifact"
    )]
    UnknownIdentity { endpoint: String, labels: String },

    /// The node's bindings file could not be read or written, or is malformed.
    #[error("using the node's bindings file {}", path.display())]
    Bindings {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// `endpoint remove` named an interface the node has not bound.
    #[error("interface {interface} is not bound on this node")]
    NotBound { interface: String },

    /// An apply was given no bindings and none are stored from an earlier apply.
    #[error("no interface bindings given (--iface) and none stored in {}", path.display())]
    NoBindings { path: PathBuf },

    /// `endpoint` commands need an artifact already applied on this node.
    #[error(
        "no applied artifact found in {} (the live one's checksum is {checksum}): apply an \
         artifact first",
        dir.display()
    )]
    NoLiveArtifact { dir: PathBuf, checksum: String },

    /// The addresses of the current network namespace could not be listed (for a host
    /// endpoint, whose own addresses they are).
    #[error("listing the addresses of the current network namespace")]
    LocalAddresses {
        #[source]
        source: io::Error,
    },

    /// A bound interface does not exist in the current network namespace.
    #[error("resolving interface {interface} in the current network namespace")]
    UnknownInterface {
        interface: String,
        #[source]
        source: io::Error,
    },
}

fn similar_names(suggestions: &[String], known: usize) -> String {
    if suggestions.is_empty() {
        format!(" (it has {known} endpoints, none with a similar name)")
    } else {
        format!("; similar names: {}", suggestions.join(", "))
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
