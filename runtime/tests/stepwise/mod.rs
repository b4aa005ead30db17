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

#[path = "../../../bpf-progs/tests/testrun/pins.rs"]
pub mod pins;
#[path = "../../../tests/kernel/privileges.rs"]
mod privileges;

/// Whether this machine can load the datapath (see `privileges`).
pub fn available() -> bool {
    privileges::available("kernel plan test", &[])
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
