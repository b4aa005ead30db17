//! Whether this machine can run a kernel test: root, a bpffs at /sys/fs/bpf (mounted here
//! if missing), BPF map creation allowed, and whatever tools the test names. Shared by
//! every kernel test harness of the workspace (`tests/kernel`, included by path from
//! `bpf-progs/tests/testrun` and `runtime/tests/stepwise`).
//!
//! Without the privileges a CI run (`CI=true`) fails, because a kernel test that silently
//! skips in CI tests nothing; elsewhere the test says why and is skipped.

use std::{ffi::CString, process::Command};

/// `BPF_FS_MAGIC` from `<linux/magic.h>`.
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;
const BPFFS: &str = "/sys/fs/bpf";

/// Whether `test` can run; `tools` must answer `TOOL -V`.
pub fn available(test: &str, tools: &[&str]) -> bool {
    match check(tools) {
        Ok(()) => true,
        Err(reason) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("the {test} cannot run in CI: {reason}")
        }
        Err(reason) => {
            eprintln!("skipping the {test}: {reason}");
            false
        }
    }
}

fn check(tools: &[&str]) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".into());
    }
    for tool in tools {
        if Command::new(tool).arg("-V").output().is_err() {
            return Err(format!("`{tool}` is not installed"));
        }
    }
    if !is_bpffs() {
        let out = Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]).output();
        if !is_bpffs() {
            return Err(format!("no bpffs at {BPFFS}, and mounting one failed: {out:?}"));
        }
    }
    trial_map_create()
}

fn is_bpffs() -> bool {
    let path = CString::new(BPFFS).expect("no NUL");
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: a NUL-terminated path and a statfs-sized buffer, both alive during the call.
    let rc = unsafe { libc::statfs(path.as_ptr(), stat.as_mut_ptr()) };
    // SAFETY: statfs filled the buffer when it returned 0.
    rc == 0 && unsafe { stat.assume_init() }.f_type as u64 & 0xffff_ffff == BPF_FS_MAGIC
}

/// Creates and closes a one-entry array map: the kernel refuses it without CAP_BPF (or
/// with BPF disabled), which root alone does not promise in a container.
fn trial_map_create() -> Result<(), String> {
    /// The first fields of `union bpf_attr` for `BPF_MAP_CREATE`; the kernel reads the
    /// rest as zero.
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    let attr =
        MapCreate { map_type: BPF_MAP_TYPE_ARRAY, key_size: 4, value_size: 4, max_entries: 1 };
    // SAFETY: `attr` is a valid prefix of bpf_attr and its size is passed with it.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, &attr, size_of::<MapCreate>() as libc::c_uint)
    };
    if fd < 0 {
        return Err(format!("BPF_MAP_CREATE failed: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the descriptor was just returned by the kernel and nothing else owns it.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}
