//! The two kernel mechanisms behind a generation switch that aya does not wrap.
//!
//! [`ConfigMapping`] maps the one-entry `policyc_config` array (created with
//! `BPF_F_MMAPABLE`) into this process, so the generation changes with a single aligned
//! 32-bit store: a `BPF_MAP_UPDATE_ELEM` would copy the whole value, and a program
//! reading the generation while the copy runs is not promised to see either whole value.
//!
//! [`ReaderBarrier`] waits for the programs in flight. The kernel answers an update of a
//! map-in-map from user space only after `synchronize_rcu()` (`maybe_wait_bpf_programs()`
//! in kernel/bpf/syscall.c, since Linux 4.13), so that user space knows no program still
//! uses the inner map it replaced. tc programs run inside an RCU read-side critical
//! section, so once the update returns, every packet that read the old generation has
//! been judged. The barrier is a private one-slot array of maps updated with the same
//! inner map each time; it is never pinned and goes with the process.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::maps::MapData;
use datapath::Config;

use crate::error::{Result, RuntimeError};

/// `BPF_MAP_CREATE`, `BPF_MAP_UPDATE_ELEM` and `BPF_MAP_TYPE_ARRAY_OF_MAPS` from
/// `<linux/bpf.h>`.
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// The config entry, mapped shared into this process.
pub(crate) struct ConfigMapping {
    ptr: NonNull<Config>,
    len: usize,
    /// Keeps the map open while it is mapped.
    _map: MapData,
}

impl ConfigMapping {
    /// Maps the first page of `map`, the config array; `path` names it in errors.
    pub(crate) fn new(map: MapData, path: &Path) -> Result<ConfigMapping> {
        let map_err = |source| RuntimeError::MapConfig { path: path.to_owned(), source };
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let len = usize::try_from(page).map_err(|_| map_err(io::Error::last_os_error()))?;
        if size_of::<Config>() > len {
            return Err(map_err(io::Error::other("the config value is larger than a page")));
        }
        // SAFETY: a new shared mapping of an mmapable BPF array's fd, at an address the
        // kernel picks; the result is checked before use.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(map_err(io::Error::last_os_error()));
        }
        let ptr = NonNull::new(addr.cast::<Config>())
            .ok_or_else(|| map_err(io::Error::other("mmap returned a null mapping")))?;
        Ok(ConfigMapping { ptr, len, _map: map })
    }

    /// The config as the datapath sees it now.
    pub(crate) fn read(&self) -> Config {
        // SAFETY: the mapping holds a whole `Config` (checked in `new`), page-aligned,
        // and lives as long as `self`; any bit pattern is a valid `Config`.
        unsafe { std::ptr::read_volatile(self.ptr.as_ptr()) }
    }

    /// Writes every field but the generation, then the generation with one atomic store,
    /// so the fields that go with a generation are in place when it becomes visible.
    pub(crate) fn write(&mut self, config: &Config) {
        let ptr = self.ptr.as_ptr();
        // SAFETY: as in `read`; the fields are written through raw pointers into the
        // mapping, each naturally aligned, with no reference to shared memory held.
        unsafe {
            std::ptr::write_volatile(&raw mut (*ptr).flags, config.flags);
            std::ptr::write_volatile(&raw mut (*ptr).event_rate, config.event_rate);
            std::ptr::write_volatile(&raw mut (*ptr).event_burst, config.event_burst);
            std::ptr::write_volatile(&raw mut (*ptr).source_digest, config.source_digest);
            std::ptr::write_volatile(&raw mut (*ptr).artifact_checksum, config.artifact_checksum);
        }
        // SAFETY: `generation` is the first field, so 4-byte aligned in a page-aligned
        // mapping that outlives this reference, and every access to it from this process
        // goes through this atomic; the datapath reads it with a single load.
        let generation = unsafe { AtomicU32::from_ptr(&raw mut (*ptr).generation) };
        generation.store(config.generation, Ordering::SeqCst);
    }
}

impl Drop for ConfigMapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; nothing refers to it after.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A private array of maps whose update waits for the BPF programs in flight.
pub(crate) struct ReaderBarrier {
    outer: OwnedFd,
    inner: OwnedFd,
}

impl ReaderBarrier {
    pub(crate) fn new() -> io::Result<ReaderBarrier> {
        let inner = create_map(BPF_MAP_TYPE_ARRAY, 0)?;
        let outer = create_map(BPF_MAP_TYPE_ARRAY_OF_MAPS, inner.as_raw_fd() as u32)?;
        Ok(ReaderBarrier { outer, inner })
    }

    /// Puts the inner map into slot 0 again; the kernel returns after a grace period.
    pub(crate) fn wait(&self) -> io::Result<()> {
        let key = 0u32;
        let value = self.inner.as_raw_fd() as u32;
        // bpf_attr for BPF_MAP_UPDATE_ELEM: map_fd (u32), then at offset 8 the key
        // pointer, at 16 the value pointer, at 24 the flags (all u64).
        let mut attr = [0u32; 32];
        attr[0] = self.outer.as_raw_fd() as u32;
        let (key_ptr, value_ptr) = (&raw const key as u64, &raw const value as u64);
        attr[2..4].copy_from_slice(&[key_ptr as u32, (key_ptr >> 32) as u32]);
        attr[4..6].copy_from_slice(&[value_ptr as u32, (value_ptr >> 32) as u32]);
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
    }
}

/// `BPF_MAP_LOOKUP_BATCH` from `<linux/bpf.h>`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Every entry of a hash map, read with `BPF_MAP_LOOKUP_BATCH` (Linux 5.6): a handful of
/// system calls for the whole map, where a walk with `BPF_MAP_GET_NEXT_KEY` and a lookup
/// per key costs two per entry (the read of a large live policy map dominated an apply).
/// Reads at most `capacity` entries. `K` and `V` must be the map's key and value types.
pub(crate) fn lookup_batch<K: aya::Pod, V: aya::Pod>(
    map: &MapData,
    capacity: usize,
) -> io::Result<Vec<(K, V)>> {
    let fd = map.fd().as_fd().as_raw_fd() as u32;
    let (key_size, value_size) = (size_of::<K>(), size_of::<V>());
    let mut chunk = capacity.clamp(1, 8192);
    let mut entries = Vec::new();
    // The batch token of a hash map is a bucket number (u32); 8 bytes leave room.
    let (mut token, mut next) = ([0u8; 8], [0u8; 8]);
    let mut first = true;
    loop {
        let mut keys = vec![0u8; chunk * key_size];
        let mut values = vec![0u8; chunk * value_size];
        // bpf_attr for the batch commands: in_batch, out_batch, keys, values (u64 each,
        // from offset 0), count and map_fd (u32 at 32 and 36), elem_flags, flags (u64).
        let mut attr = [0u32; 32];
        let ptr = |p: *const u8| p as u64;
        let in_batch = if first { 0 } else { ptr(token.as_ptr()) };
        for (slot, value) in
            [in_batch, ptr(next.as_mut_ptr()), ptr(keys.as_mut_ptr()), ptr(values.as_mut_ptr())]
                .into_iter()
                .enumerate()
        {
            attr[slot * 2] = value as u32;
            attr[slot * 2 + 1] = (value >> 32) as u32;
        }
        attr[8] = chunk as u32;
        attr[9] = fd;
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let error = result.err();
        if error.as_ref().and_then(io::Error::raw_os_error) == Some(libc::ENOSPC) {
            // One bucket holds more entries than a chunk: ask again with room for it.
            chunk *= 2;
            continue;
        }
        let count = (attr[8] as usize).min(chunk);
        for i in 0..count {
            // SAFETY: the kernel filled `count` keys and values of the map's sizes, which
            // are those of `K` and `V`; `aya::Pod` types accept any bit pattern, and the
            // reads are unaligned because the buffers are bytes.
            let key = unsafe { std::ptr::read_unaligned(keys.as_ptr().add(i * key_size).cast()) };
            // SAFETY: as above.
            let value =
                unsafe { std::ptr::read_unaligned(values.as_ptr().add(i * value_size).cast()) };
            entries.push((key, value));
        }
        match error {
            None => {}
            // The walk reached the end of the map.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(entries),
            Some(e) => return Err(e),
        }
        if entries.len() >= capacity {
            return Ok(entries);
        }
        token = next;
        first = false;
    }
}

/// A one-entry map with 4-byte keys and values, of `map_type`, without name or BTF.
fn create_map(map_type: u32, inner_map_fd: u32) -> io::Result<OwnedFd> {
    // bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries,
    // map_flags, inner_map_fd, each a u32 from offset 0; the rest zero.
    let mut attr = [0u32; 32];
    attr[..6].copy_from_slice(&[map_type, 4, 4, 1, 0, inner_map_fd]);
    let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: BPF_MAP_CREATE returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The bpf(2) system call with `attr` as its attribute union.
fn bpf(cmd: libc::c_long, attr: &mut [u32; 32]) -> io::Result<i32> {
    // SAFETY: `attr` is a zero-initialised buffer the size the call is told, laid out as
    // the command's part of `union bpf_attr`; the pointers in it (update) point to
    // locals that outlive the call.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), std::mem::size_of_val(attr))
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc as i32) }
}
