//! The pin directory: where the maps and the interface links live in bpffs, so that
//! enforcement outlasts the process that set it up.
//!
//! Layout: `<dir>/<map name>` for each map of the object (pinned by aya, by name), and
//! `<dir>/links/<interface>_<hook>` for each tcx link (`_ingress` holds the program that
//! judges what the endpoint sends, `_egress` the one that judges what it receives).

use std::{
    ffi::CString,
    fs, io,
    os::{fd::AsRawFd, unix::ffi::OsStrExt},
    path::{Path, PathBuf},
};

use crate::error::{Result, RuntimeError};

/// Where `policyc-node` pins by default.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/policyc";

/// `BPF_FS_MAGIC` from `<linux/magic.h>`: the `f_type` statfs reports for bpffs.
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

/// The two tc hooks of a host-side interface. On a pod's interface (the host end of its
/// veth) tc ingress carries what the pod sends; on a node's uplink, bound to the node's
/// host endpoint, it carries what the node receives, so there the programs swap hooks
/// ([`Hook::program_hook`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    /// tc ingress: packets a pod sends, judged by its egress table.
    Ingress,
    /// tc egress: packets a pod receives, judged by its ingress table.
    Egress,
}

impl Hook {
    pub const BOTH: [Hook; 2] = [Hook::Ingress, Hook::Egress];

    /// The hook's name, also the suffix of its link pins.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Ingress => "ingress",
            Hook::Egress => "egress",
        }
    }

    /// The hook whose program ([`Hook::program`]) runs at this hook: itself on a pod's
    /// interface, the other one on a node's uplink (`host`), so that each program still
    /// judges the packets to or from its endpoint.
    pub fn program_hook(self, host: bool) -> Hook {
        match (self, host) {
            (hook, false) => hook,
            (Hook::Ingress, true) => Hook::Egress,
            (Hook::Egress, true) => Hook::Ingress,
        }
    }

    /// The program attached at this hook of a pod's interface.
    pub fn program(self) -> &'static str {
        match self {
            Hook::Ingress => datapath::program_names::FROM_ENDPOINT,
            Hook::Egress => datapath::program_names::TO_ENDPOINT,
        }
    }
}

/// Paths inside one pin directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        PinDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The pin of map `name`.
    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Where a new map set is pinned while maps of another layout are migrated.
    pub fn staging(&self) -> PathBuf {
        self.root.join("staging")
    }

    /// The directory of link pins.
    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    /// The pin of the link of `interface` at `hook`.
    pub fn link(&self, interface: &str, hook: Hook) -> PathBuf {
        self.links().join(format!("{interface}_{}", hook.name()))
    }

    /// The link pins present, as (interface, hook, path), sorted. Files that are not
    /// named like link pins are left out: they are not ours.
    pub fn link_pins(&self) -> Result<Vec<(String, Hook, PathBuf)>> {
        let dir = self.links();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(RuntimeError::ReadDir { path: dir, source }),
        };
        let mut pins = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|source| RuntimeError::ReadDir { path: dir.clone(), source })?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            let parsed = Hook::BOTH.into_iter().find_map(|hook| {
                let interface = name.strip_suffix(hook.name())?.strip_suffix('_')?;
                crate::bindings::check_interface_name(interface).ok()?;
                Some((interface.to_owned(), hook))
            });
            if let Some((interface, hook)) = parsed {
                pins.push((interface, hook, entry.path()));
            }
        }
        pins.sort();
        Ok(pins)
    }

    /// Checks that the directory is (or would be created) on bpffs, then creates it and
    /// its `links` subdirectory.
    pub fn create(&self) -> Result<()> {
        check_bpffs(&self.root)?;
        for dir in [self.root.clone(), self.links()] {
            fs::create_dir_all(&dir)
                .map_err(|source| RuntimeError::CreateDir { path: dir, source })?;
        }
        Ok(())
    }

    /// Takes an exclusive lock on the directory, held until the guard is dropped, so
    /// two runs never interleave their updates.
    pub fn lock(&self) -> Result<DirLock> {
        let lock_err = |source| RuntimeError::Lock { path: self.root.clone(), source };
        let dir = fs::File::open(&self.root).map_err(lock_err)?;
        // SAFETY: flock only reads the descriptor, which `dir` keeps open during the call.
        let rc = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(lock_err(io::Error::last_os_error()));
        }
        Ok(DirLock { _dir: dir })
    }
}

/// An exclusive lock on a pin directory; released when dropped (closing the descriptor
/// releases a flock).
#[derive(Debug)]
pub struct DirLock {
    _dir: fs::File,
}

/// Checks that `path`, or its nearest existing ancestor when it does not exist yet, is
/// on bpffs. Pins can only be created on bpffs, and `uninstall` must never remove files
/// anywhere else.
pub fn check_bpffs(path: &Path) -> Result<()> {
    let existing = path
        .ancestors()
        .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p })
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let found = filesystem_type(existing)
        .map_err(|source| RuntimeError::Statfs { path: existing.to_owned(), source })?;
    if found != BPF_FS_MAGIC {
        return Err(RuntimeError::NotBpffs { path: existing.to_owned(), found });
    }
    Ok(())
}

fn filesystem_type(path: &Path) -> io::Result<u64> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c_path` is NUL-terminated and `buf` is large enough for a statfs; both
    // outlive the call.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), buf.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs succeeded, so it filled `buf`.
    let buf = unsafe { buf.assume_init() };
    // `f_type` is a signed word on some targets; the magic is compared as its bit pattern.
    Ok(buf.f_type as u64 & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_outside_bpffs_is_refused_with_a_mount_hint() {
        let err = check_bpffs(&std::env::temp_dir().join("policyc-not-bpffs/x")).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("is not on a bpf filesystem"), "{message}");
        assert!(message.contains("mount -t bpf bpf /sys/fs/bpf"), "{message}");
    }

    #[test]
    fn link_pins_are_named_by_interface_and_hook() {
        let dir = PinDir::new("/sys/fs/bpf/policyc");
        assert_eq!(
            dir.link("veth1", Hook::Egress),
            Path::new("/sys/fs/bpf/policyc/links/veth1_egress")
        );
        assert_eq!(Hook::Ingress.program(), "policyc_from_ep");
        assert_eq!(Hook::Egress.program(), "policyc_to_ep");
        // A node's uplink: what arrives is to the host endpoint.
        assert_eq!(Hook::Ingress.program_hook(true).program(), "policyc_to_ep");
        assert_eq!(Hook::Egress.program_hook(true).program(), "policyc_from_ep");
        assert_eq!(Hook::Egress.program_hook(false), Hook::Egress);
    }

    #[test]
    fn only_files_named_like_link_pins_are_listed() {
        let root = std::env::temp_dir().join(format!("policyc-pins-{}", std::process::id()));
        let dir = PinDir::new(&root);
        fs::create_dir_all(dir.links()).unwrap();
        for name in ["a_b_ingress", "pw1_egress", "notes.txt", "_ingress", "x_sideways"] {
            fs::write(dir.links().join(name), b"").unwrap();
        }
        let pins = dir.link_pins();
        fs::remove_dir_all(&root).unwrap();

        let names: Vec<(String, Hook)> =
            pins.unwrap().into_iter().map(|(i, h, _)| (i, h)).collect();
        assert_eq!(names, [("a_b".to_owned(), Hook::Ingress), ("pw1".to_owned(), Hook::Egress)]);
    }
}
