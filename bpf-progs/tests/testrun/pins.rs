//! A private pin directory in bpffs for one loaded object, shared by the kernel test
//! harnesses (`bpf-progs/tests/testrun`, and `runtime/tests/stepwise` by path). Dropping
//! it removes every pin and the directory, also when a test panics, so no run leaves maps
//! behind in bpffs.

use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct PinDir(pub PathBuf);

impl PinDir {
    /// `/sys/fs/bpf/<prefix>-<pid>-<tag>`, made empty.
    pub fn create(prefix: &str, tag: &str) -> PinDir {
        let name = format!("{prefix}-{}-{tag}", std::process::id());
        let dir = PinDir(Path::new("/sys/fs/bpf").join(name));
        // A directory left by an earlier process with this id would hold maps of another
        // layout, which aya would reuse.
        dir.remove();
        std::fs::create_dir(&dir.0).unwrap_or_else(|e| panic!("creating {}: {e}", dir.0.display()));
        dir
    }

    fn remove(&self) {
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        self.remove();
    }
}
