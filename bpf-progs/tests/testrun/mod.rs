//! The harness of the kernel differential test: the datapath object loaded into the
//! running kernel (`kernel`), frames built from flow descriptions (`packet`), the check of
//! one flow against the reference evaluator (`judge`), and its two sources of flows: the
//! conformance scenarios (`conformance`) and generated clusters (`generate`). The checks
//! of single behaviours (`conntrack`, `fragments`, `malformed`) run on a small cluster of
//! their own (`fixture`).

pub mod conformance;
pub mod conntrack;
pub mod fixture;
pub mod fragments;
pub mod generate;
pub mod judge;
pub mod kernel;
pub mod malformed;
pub mod packet;

use std::ffi::CString;

/// `BPF_FS_MAGIC` from `<linux/magic.h>`.
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

/// Whether this machine can load the datapath. Without the privileges a CI run
/// (`CI=true`) fails, because a kernel test that silently skips in CI tests nothing;
/// elsewhere the test is skipped with the reason.
pub fn available() -> bool {
    match check_privileges() {
        Ok(()) => true,
        Err(reason) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("the kernel test cannot run in CI: {reason}")
        }
        Err(reason) => {
            eprintln!("skipping kernel test: {reason}");
            false
        }
    }
}

fn check_privileges() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".into());
    }
    let path = CString::new("/sys/fs/bpf").expect("no NUL");
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: a NUL-terminated path and a statfs-sized buffer, both alive during the call.
    let rc = unsafe { libc::statfs(path.as_ptr(), stat.as_mut_ptr()) };
    // SAFETY: statfs filled the buffer when it returned 0.
    if rc != 0 || unsafe { stat.assume_init() }.f_type as u64 & 0xffff_ffff != BPF_FS_MAGIC {
        return Err("no bpffs mounted at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)".into());
    }
    trial_map_create()
}

/// Creates and closes a one-entry array map: the kernel refuses it without CAP_BPF (or
/// with BPF disabled), which is what the test needs to know.
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
