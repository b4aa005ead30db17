//! The harness of the kernel plan test: the datapath loaded with its maps opened through
//! the runtime's own [`runtime::kernel::KernelMaps`] (`harness`), the cases (two map
//! states and the packets that probe them) built from compiled clusters (`compiled`) or
//! drawn directly (`drawn`), and the step-by-step check of a plan (`check`).
//!
//! Frames and generated clusters come from the datapath's differential test
//! (bpf-progs/tests/testrun), included rather than copied: the same packets that hold
//! the kernel to the reference there probe the update here.

pub mod check;
pub mod compiled;
pub mod drawn;
pub mod harness;

#[path = "../../../bpf-progs/tests/testrun/generate/mod.rs"]
pub mod generate;
#[path = "../../../bpf-progs/tests/testrun/packet.rs"]
#[expect(dead_code, reason = "the builders of malformed frames are not needed here")]
pub mod packet;

use std::ffi::CString;

/// `BPF_FS_MAGIC` from `<linux/magic.h>`.
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

/// Whether this machine can load the datapath. Without the privileges a CI run
/// (`CI=true`) fails, because a kernel test that silently skips in CI tests nothing;
/// elsewhere the test says why and is skipped.
pub fn available() -> bool {
    match check_privileges() {
        Ok(()) => true,
        Err(reason) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("the kernel plan test cannot run in CI: {reason}")
        }
        Err(reason) => {
            eprintln!("skipping kernel plan test: {reason}");
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

/// SplitMix64: a small deterministic generator, so that a case is replayed from its seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// `items` in a random order (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}
