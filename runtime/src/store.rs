//! The node's copy of the artifacts it applied, kept in a state directory on an ordinary
//! filesystem (bpffs holds only BPF objects).
//!
//! The datapath knows identities and rules by number only; to show a verdict event with
//! labels and the rule's source, `observe` needs the artifact that was live when the
//! event was judged. `apply` stores each artifact under its checksum before switching the
//! maps to it, and the config map records the checksum of the live one, so the two can
//! never be confused: a stored file is named by what it contains, and it is written
//! whole (to a temporary name, then renamed) or not at all.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use compiler::artifact::Artifact;

use crate::error::{Result, RuntimeError};

/// Where `policyc-node` keeps its state by default.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/policyc";

/// How many artifacts the store keeps: the live one and the one before it, for events
/// still in flight from the previous generation.
const KEEP: usize = 2;

/// Artifacts by checksum in `<dir>/artifacts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactStore {
    dir: PathBuf,
}

impl ArtifactStore {
    /// The store under state directory `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        ArtifactStore { dir: state_dir.join("artifacts") }
    }

    /// The state directory's artifact folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, checksum: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.artifact", hex(checksum)))
    }

    /// Stores `bytes`, the encoding of an artifact whose checksum is `checksum`, unless
    /// it is there already.
    pub fn save(&self, checksum: &[u8; 32], bytes: &[u8]) -> Result<()> {
        let path = self.path(checksum);
        if path.exists() {
            return Ok(());
        }
        let write_err = |source| RuntimeError::Store { path: path.clone(), source };
        fs::create_dir_all(&self.dir).map_err(write_err)?;
        let partial = self.dir.join(format!(".{}.partial", hex(checksum)));
        fs::write(&partial, bytes).map_err(write_err)?;
        fs::File::open(&partial).and_then(|f| f.sync_all()).map_err(write_err)?;
        fs::rename(&partial, &path).map_err(write_err)
    }

    /// The artifact with this checksum, or `None` if the store does not have it.
    pub fn load(&self, checksum: &[u8; 32]) -> Result<Option<Artifact>> {
        let path = self.path(checksum);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(RuntimeError::Store { path, source }),
        };
        Artifact::decode(&bytes)
            .map(Some)
            .map_err(|e| RuntimeError::Store { path, source: io::Error::other(e) })
    }

    /// Removes every stored artifact but `live` and the most recently stored others, up
    /// to [`KEEP`] in all.
    pub fn prune(&self, live: &[u8; 32]) -> Result<()> {
        let live_name = format!("{}.artifact", hex(live));
        let mut others: Vec<(std::time::SystemTime, PathBuf)> = self
            .files()?
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n != live_name.as_str()))
            .map(|p| {
                (fs::metadata(&p).and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH), p)
            })
            .collect();
        others.sort();
        let excess = others.len().saturating_sub(KEEP - 1);
        for (_, path) in others.into_iter().take(excess) {
            fs::remove_file(&path).map_err(|source| RuntimeError::Store { path, source })?;
        }
        Ok(())
    }

    /// The stored artifact files, sorted.
    pub fn files(&self) -> Result<Vec<PathBuf>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
            Err(source) => return Err(RuntimeError::Store { path: self.dir.clone(), source }),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|source| RuntimeError::Store { path: self.dir.clone(), source })?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "artifact") {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    /// Removes every stored artifact, then the folder and the state directory if they
    /// are left empty. Returns the files removed.
    pub fn clear(&self) -> Result<Vec<PathBuf>> {
        let files = self.files()?;
        for path in &files {
            fs::remove_file(path)
                .map_err(|source| RuntimeError::Store { path: path.clone(), source })?;
        }
        // Leftovers of an interrupted save are ours too.
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name.to_string_lossy().ends_with(".partial") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let _ = fs::remove_dir(&self.dir);
        if let Some(state_dir) = self.dir.parent() {
            let _ = fs::remove_dir(state_dir);
        }
        Ok(files)
    }
}

/// Lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("policyc-store-{name}-{}", std::process::id()))
    }

    #[test]
    fn saves_loads_and_prunes_by_checksum() {
        let state = temp("cycle");
        let store = ArtifactStore::new(&state);
        let artifact = Artifact::default();
        let bytes = artifact.encode();
        let sum = |b: u8| [b; 32];

        assert_eq!(store.load(&sum(1)).unwrap(), None);
        for b in 1..=3 {
            store.save(&sum(b), &bytes).unwrap();
            // Distinct modification times order the prune.
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(store.load(&sum(2)).unwrap(), Some(artifact));
        store.prune(&sum(1)).unwrap();
        let names: Vec<String> = store
            .files()
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy()[..4].to_owned())
            .collect();
        assert_eq!(names, ["0101", "0303"], "the live one and the newest other are kept");

        assert_eq!(store.clear().unwrap().len(), 2);
        assert!(!state.exists(), "an emptied state directory is removed");
    }

    #[test]
    fn a_corrupt_stored_artifact_is_an_error_naming_the_file() {
        let state = temp("corrupt");
        let store = ArtifactStore::new(&state);
        fs::create_dir_all(store.dir()).unwrap();
        fs::write(store.path(&[7; 32]), b"not an artifact").unwrap();
        let err = store.load(&[7; 32]).unwrap_err();
        let _ = store.clear();
        assert!(err.to_string().contains("0707"), "{err}");
    }
}
