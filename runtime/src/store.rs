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
use serde_json::{Value, json};

use crate::{
    bindings::{Binding, UnlistedPod},
    error::{Result, RuntimeError},
};

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

    /// Removes every stored artifact, the bindings file and the program cache, then the
    /// folder and the state directory if they are left empty. Returns the files removed.
    pub fn clear(&self) -> Result<Vec<PathBuf>> {
        let mut files = self.files()?;
        for path in &files {
            fs::remove_file(path)
                .map_err(|source| RuntimeError::Store { path: path.clone(), source })?;
        }
        if let Some(state_dir) = self.dir.parent() {
            for path in [NodeBindings::new(state_dir).path, ProgramCache::new(state_dir).path] {
                if path.exists() {
                    fs::remove_file(&path)
                        .map_err(|source| RuntimeError::Store { path: path.clone(), source })?;
                    files.push(path);
                }
            }
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

/// The node's complete set of interface bindings, kept in `<state dir>/bindings.json` so
/// that `endpoint add|remove`, and an `apply` or `watch` given no `--iface`, start from
/// what the last apply bound. Written whole (a temporary file renamed) after each apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeBindings {
    path: PathBuf,
}

impl NodeBindings {
    pub fn new(state_dir: &Path) -> Self {
        NodeBindings { path: state_dir.join("bindings.json") }
    }

    /// `given` when not empty, else the stored bindings; an error when neither exists.
    pub fn or_stored(&self, given: Vec<Binding>) -> Result<Vec<Binding>> {
        if !given.is_empty() {
            return Ok(given);
        }
        self.load()?.ok_or_else(|| RuntimeError::NoBindings { path: self.path.clone() })
    }

    /// The stored bindings, or `None` before the first apply.
    pub fn load(&self) -> Result<Option<Vec<Binding>>> {
        let bad = |source| RuntimeError::Bindings { path: self.path.clone(), source };
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(bad(source)),
        };
        let value: Value = serde_json::from_str(&text).map_err(|e| bad(io::Error::other(e)))?;
        let invalid = || bad(io::Error::other("not a list of bindings"));
        let items = value["bindings"].as_array().ok_or_else(invalid)?;
        items
            .iter()
            .map(|item| binding_of(item).ok_or_else(invalid))
            .collect::<Result<_>>()
            .map(Some)
    }

    pub fn save(&self, bindings: &[Binding]) -> Result<()> {
        let write_err = |source| RuntimeError::Bindings { path: self.path.clone(), source };
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(write_err)?;
        }
        let list: Vec<Value> = bindings.iter().map(binding_json).collect();
        let text = serde_json::to_string_pretty(&json!({ "bindings": list }))
            .map_err(|e| write_err(io::Error::other(e)))?;
        let partial = self.path.with_extension("json.partial");
        fs::write(&partial, text + "\n").map_err(write_err)?;
        fs::rename(&partial, &self.path).map_err(write_err)
    }
}

fn binding_json(binding: &Binding) -> Value {
    let pod = binding.pod.as_ref().map(|pod| {
        json!({
            "addresses": pod.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "labels": pod.labels,
            "service_account": pod.service_account,
        })
    });
    json!({ "interface": binding.interface, "endpoint": binding.endpoint, "pod": pod })
}

fn binding_of(value: &Value) -> Option<Binding> {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let pod = match &value["pod"] {
        Value::Null => None,
        pod => Some(UnlistedPod {
            addresses: pod["addresses"]
                .as_array()?
                .iter()
                .map(|a| a.as_str()?.parse().ok())
                .collect::<Option<_>>()?,
            labels: pod["labels"]
                .as_object()?
                .iter()
                .map(|(k, v)| Some((k.clone(), text(v)?)))
                .collect::<Option<_>>()?,
            service_account: text(&pod["service_account"]),
        }),
    };
    Some(Binding {
        interface: text(&value["interface"])?,
        endpoint: text(&value["endpoint"])?,
        pod,
    })
}

/// What this build's programs look like once loaded, remembered from an earlier apply so
/// that an apply whose links already carry them need not load them (through the
/// verifier) only to compare: per program, its tag and the ids of the maps it uses.
/// Keyed by a hash of the embedded object; any other content is ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramCache {
    path: PathBuf,
}

/// A program's tag and the sorted ids of its maps.
pub type ProgramIdentity = (u64, Vec<u32>);

impl ProgramCache {
    pub fn new(state_dir: &Path) -> Self {
        ProgramCache { path: state_dir.join("programs.json") }
    }

    /// The identity remembered for program `name` of this build's object, if any.
    pub fn get(&self, name: &str) -> Option<ProgramIdentity> {
        let value: Value = serde_json::from_str(&fs::read_to_string(&self.path).ok()?).ok()?;
        if value["object"].as_str()? != object_hash() {
            return None;
        }
        let program = &value["programs"][name];
        let maps = program["maps"].as_array()?.iter().map(|m| m.as_u64().map(|m| m as u32));
        Some((program["tag"].as_u64()?, maps.collect::<Option<_>>()?))
    }

    /// Remembers `identity` for program `name`. A cache is only ever a shortcut: failing
    /// to write one is logged, not an error.
    pub fn put(&self, name: &str, identity: &ProgramIdentity) {
        let mut value: Value = fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .filter(|v: &Value| v["object"].as_str() == Some(object_hash().as_str()))
            .unwrap_or_else(|| json!({ "object": object_hash(), "programs": {} }));
        value["programs"][name] = json!({ "tag": identity.0, "maps": identity.1 });
        let partial = self.path.with_extension("json.partial");
        let written = self
            .path
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| fs::write(&partial, value.to_string()))
            .and_then(|()| fs::rename(&partial, &self.path));
        if let Err(error) = written {
            tracing::debug!(path = %self.path.display(), %error, "program cache not written");
        }
    }
}

/// A 64-bit FNV-1a hash of the embedded datapath object, in hexadecimal.
fn object_hash() -> String {
    let hash = datapath::OBJECT
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
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

        NodeBindings::new(&state).save(&[]).unwrap();
        assert_eq!(store.clear().unwrap().len(), 3, "two artifacts and the bindings");
        assert!(!state.exists(), "an emptied state directory is removed");
    }

    #[test]
    fn bindings_survive_a_save_and_load() {
        let state = temp("bindings");
        let node = NodeBindings::new(&state);
        assert_eq!(node.load().unwrap(), None);
        let bindings = vec![
            Binding { interface: "pw".into(), endpoint: "prod/web".into(), pod: None },
            Binding {
                interface: "pw2".into(),
                endpoint: "prod/web-2".into(),
                pod: Some(UnlistedPod {
                    addresses: vec!["198.18.0.13".parse().unwrap(), "fd00::13".parse().unwrap()],
                    labels: [("app".to_owned(), "web".to_owned())].into(),
                    service_account: Some("web".into()),
                }),
            },
        ];
        node.save(&bindings).unwrap();
        let loaded = node.load().unwrap();
        fs::write(&node.path, "{\"bindings\": [{\"interface\": 3}]}").unwrap();
        let broken = node.load();
        let _ = fs::remove_dir_all(&state);
        assert_eq!(loaded, Some(bindings));
        assert!(broken.unwrap_err().to_string().contains("bindings.json"));
    }

    #[test]
    fn the_program_cache_answers_only_for_this_build() {
        let state = temp("programs");
        let cache = ProgramCache::new(&state);
        assert_eq!(cache.get("policyc_to_ep"), None);
        cache.put("policyc_to_ep", &(0xfeed, vec![3, 7]));
        cache.put("policyc_from_ep", &(0xbeef, vec![3]));
        let found = (cache.get("policyc_to_ep"), cache.get("policyc_from_ep"));
        // Another object's cache says nothing about this one.
        fs::write(
            &cache.path,
            r#"{"object":"0000","programs":{"policyc_to_ep":{"tag":1,"maps":[]}}}"#,
        )
        .unwrap();
        let other = cache.get("policyc_to_ep");
        let _ = fs::remove_dir_all(&state);
        assert_eq!(found, (Some((0xfeed, vec![3, 7])), Some((0xbeef, vec![3]))));
        assert_eq!(other, None);
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
