//! The kernel implementation of [`MapBackend`]: aya maps opened from their pins, each
//! checked against the embedded object's declaration before use, plus the two things aya
//! does not offer: a store to the config map's shared mapping, and a wait for the
//! programs in flight (see [`crate::sync`]).

use std::{io, path::Path};

use aya::maps::{
    HashMap, IterableMap as _, LpmTrie, Map, MapData, MapError, PerCpuArray, PerCpuValues, lpm_trie,
};
use datapath::{
    Config, CtKey, CtValue, EndpointInfo, FragKey, FragValue, HostKey, IpcacheKey, IpcacheValue,
    MetricsValue, PolicyKey, PolicyValue, Reason, capacity, map_names, metrics_index,
};

use crate::{
    error::{Result, RuntimeError},
    maps::{MapBackend, MapEntry, MapKey, MapName},
    pins::PinDir,
    spec::{MapLayout, ObjectSpec},
    sync::{ConfigMapping, ReaderBarrier, lookup_batch},
};

/// The bytes of an ipcache key after its prefix length, as aya's LPM key wants them:
/// family, padding, address.
type IpcacheData = [u8; 20];

/// The datapath's maps, opened from a pin directory.
pub struct KernelMaps {
    config: ConfigMapping,
    endpoints: HashMap<MapData, u32, EndpointInfo>,
    hosts: HashMap<MapData, HostKey, IpcacheValue>,
    ipcache: LpmTrie<MapData, IpcacheData, IpcacheValue>,
    policy: HashMap<MapData, PolicyKey, PolicyValue>,
    conntrack: HashMap<MapData, CtKey, CtValue>,
    frags: HashMap<MapData, FragKey, FragValue>,
    metrics: PerCpuArray<MapData, MetricsValue>,
    /// Made on the first wait: `status` never needs one.
    barrier: Option<ReaderBarrier>,
}

impl KernelMaps {
    /// Opens every map pinned in `pins`, refusing any whose layout differs from `spec`.
    pub fn open(pins: &PinDir, spec: &ObjectSpec) -> Result<KernelMaps> {
        let _span = tracing::debug_span!("open_maps").entered();
        let open = |name: &str| open_checked(&pins.map(name), name, spec);
        let wrap =
            |name: &str, source: MapError| RuntimeError::OpenMap { path: pins.map(name), source };
        Ok(KernelMaps {
            config: ConfigMapping::new(open(map_names::CONFIG)?, &pins.map(map_names::CONFIG))?,
            endpoints: HashMap::try_from(Map::HashMap(open(map_names::ENDPOINTS)?))
                .map_err(|e| wrap(map_names::ENDPOINTS, e))?,
            hosts: HashMap::try_from(Map::HashMap(open(map_names::HOSTS)?))
                .map_err(|e| wrap(map_names::HOSTS, e))?,
            ipcache: LpmTrie::try_from(Map::LpmTrie(open(map_names::IPCACHE)?))
                .map_err(|e| wrap(map_names::IPCACHE, e))?,
            policy: HashMap::try_from(Map::HashMap(open(map_names::POLICY)?))
                .map_err(|e| wrap(map_names::POLICY, e))?,
            conntrack: HashMap::try_from(Map::LruHashMap(open(map_names::CONNTRACK)?))
                .map_err(|e| wrap(map_names::CONNTRACK, e))?,
            frags: HashMap::try_from(Map::LruHashMap(open(map_names::FRAGS)?))
                .map_err(|e| wrap(map_names::FRAGS, e))?,
            metrics: PerCpuArray::try_from(Map::PerCpuArray(open(map_names::METRICS)?))
                .map_err(|e| wrap(map_names::METRICS, e))?,
            barrier: None,
        })
    }
}

/// Copies the flows of the conntrack map pinned in `old` into `new`'s, if its layout is
/// this build's (else none: those connections' replies are judged by policy again). Their
/// stamps are set to a generation the new maps are not at and will not reach: a forward
/// packet is judged by the new maps' policy before its flow is trusted again, and a reply
/// passes once the interface is found still bound to the endpoint that opened the flow.
pub(crate) fn copy_flows(old: &PinDir, new: &mut KernelMaps, spec: &ObjectSpec) -> Result<usize> {
    let path = old.map(map_names::CONNTRACK);
    let Ok(data) = open_checked(&path, map_names::CONNTRACK, spec) else { return Ok(0) };
    let old_ct: HashMap<MapData, CtKey, CtValue> = HashMap::try_from(Map::LruHashMap(data))
        .map_err(|source| RuntimeError::OpenMap { path: path.clone(), source })?;
    let entries = lookup_batch::<CtKey, CtValue>(old_ct.map(), capacity::CONNTRACK as usize)
        .map_err(|e| RuntimeError::ReadMap {
            map: map_names::CONNTRACK,
            source: MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_lookup_batch",
                io_error: e,
            }),
        })?;
    let stale = new.config()?.generation.wrapping_sub(1);
    let mut copied = 0;
    for (key, value) in entries {
        let value = CtValue { generation: stale, checked: stale, ..value };
        new.update(&MapEntry::Conntrack(key, value))?;
        copied += 1;
    }
    Ok(copied)
}

impl std::fmt::Debug for KernelMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // aya's per-CPU array has no Debug; the maps are named by their pins anyway.
        f.debug_struct("KernelMaps").finish_non_exhaustive()
    }
}

/// Opens the map pinned at `path` and checks it against the object's map `name`.
pub(crate) fn open_checked(path: &Path, name: &str, spec: &ObjectSpec) -> Result<MapData> {
    let expected = spec.map(name)?;
    let open_err = |source| RuntimeError::OpenMap { path: path.to_owned(), source };
    let data = MapData::from_pin(path).map_err(open_err)?;
    let pinned = MapLayout::of(&data.info().map_err(open_err)?);
    if pinned != expected {
        return Err(RuntimeError::LayoutMismatch {
            name: name.to_owned(),
            path: path.to_owned(),
            pinned,
            expected,
        });
    }
    Ok(data)
}

fn ipcache_to_aya(key: &IpcacheKey) -> lpm_trie::Key<IpcacheData> {
    let mut data = [0u8; 20];
    data[0] = key.family;
    data[1..4].copy_from_slice(&key.pad);
    data[4..].copy_from_slice(&key.addr);
    lpm_trie::Key::new(key.prefixlen, data)
}

fn ipcache_from_aya(key: &lpm_trie::Key<IpcacheData>) -> IpcacheKey {
    let data = key.data();
    let mut addr = [0u8; 16];
    addr.copy_from_slice(&data[4..]);
    IpcacheKey {
        prefixlen: key.prefix_len(),
        family: data[0],
        pad: [data[1], data[2], data[3]],
        addr,
    }
}

/// `Ok(None)` for a missing key, the value otherwise.
fn found<V>(result: Result<V, MapError>) -> Result<Option<V>, MapError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A delete of a key that is already gone succeeded in effect.
fn deleted(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Collects at most `capacity` keys, so a map that changes while listed cannot keep the
/// listing going forever.
fn collect_keys<K>(
    keys: impl Iterator<Item = Result<K, MapError>>,
    map: MapName,
    to_key: impl Fn(K) -> MapKey,
) -> Result<Vec<MapKey>> {
    keys.take(map.capacity() as usize)
        .map(|k| k.map(&to_key))
        .collect::<Result<_, _>>()
        .map_err(|source| RuntimeError::ReadMap { map: map.pin_name(), source })
}

impl MapBackend for KernelMaps {
    fn keys(&self, map: MapName) -> Result<Vec<MapKey>> {
        match map {
            MapName::Endpoints => collect_keys(self.endpoints.keys(), map, MapKey::Endpoint),
            MapName::Hosts => collect_keys(self.hosts.keys(), map, MapKey::Host),
            MapName::Ipcache => {
                collect_keys(self.ipcache.keys(), map, |k| MapKey::Ipcache(ipcache_from_aya(&k)))
            }
            MapName::Policy => collect_keys(self.policy.keys(), map, MapKey::Policy),
            MapName::Conntrack => collect_keys(self.conntrack.keys(), map, MapKey::Conntrack),
            MapName::Frags => Ok(vec![]),
        }
    }

    fn entries(&self, map: MapName) -> Result<Vec<MapEntry>> {
        let cap = map.capacity() as usize;
        let read_err = |source| RuntimeError::ReadMap {
            map: map.pin_name(),
            source: MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_lookup_batch",
                io_error: source,
            }),
        };
        let batch = match map {
            MapName::Endpoints => lookup_batch(self.endpoints.map(), cap)
                .map(|e| e.into_iter().map(|(k, v)| MapEntry::Endpoint(k, v)).collect()),
            MapName::Hosts => lookup_batch(self.hosts.map(), cap)
                .map(|e| e.into_iter().map(|(k, v)| MapEntry::Host(k, v)).collect()),
            MapName::Policy => lookup_batch(self.policy.map(), cap)
                .map(|e| e.into_iter().map(|(k, v)| MapEntry::Policy(k, v)).collect()),
            // LPM tries have no batch operations; the ipcache holds only CIDR prefixes.
            _ => return self.keys(map)?.iter().filter_map(|k| self.get(k).transpose()).collect(),
        };
        batch.map_err(read_err)
    }

    fn len(&self, map: MapName) -> Result<usize> {
        match map {
            // Only counted: the runtime never reads a fragment's entry.
            MapName::Frags => {
                collect_keys(self.frags.keys(), map, |_| MapKey::Endpoint(0)).map(|keys| keys.len())
            }
            other => self.keys(other).map(|keys| keys.len()),
        }
    }

    fn get(&self, key: &MapKey) -> Result<Option<MapEntry>> {
        let result = match *key {
            MapKey::Endpoint(k) => {
                found(self.endpoints.get(&k, 0)).map(|v| v.map(|v| MapEntry::Endpoint(k, v)))
            }
            MapKey::Host(k) => {
                found(self.hosts.get(&k, 0)).map(|v| v.map(|v| MapEntry::Host(k, v)))
            }
            MapKey::Ipcache(k) => found(self.ipcache.get(&ipcache_to_aya(&k), 0))
                .map(|v| v.map(|v| MapEntry::Ipcache(k, v))),
            MapKey::Policy(k) => {
                found(self.policy.get(&k, 0)).map(|v| v.map(|v| MapEntry::Policy(k, v)))
            }
            MapKey::Conntrack(k) => {
                found(self.conntrack.get(&k, 0)).map(|v| v.map(|v| MapEntry::Conntrack(k, v)))
            }
        };
        result.map_err(|source| RuntimeError::ReadMap { map: key.map().pin_name(), source })
    }

    fn update(&mut self, entry: &MapEntry) -> Result<()> {
        let result = match entry {
            MapEntry::Endpoint(k, v) => self.endpoints.insert(k, v, 0),
            MapEntry::Host(k, v) => self.hosts.insert(k, v, 0),
            MapEntry::Ipcache(k, v) => self.ipcache.insert(&ipcache_to_aya(k), v, 0),
            MapEntry::Policy(k, v) => self.policy.insert(k, v, 0),
            MapEntry::Conntrack(k, v) => self.conntrack.insert(k, v, 0),
        };
        result.map_err(|source| RuntimeError::WriteMap { map: entry.map().pin_name(), source })
    }

    fn delete(&mut self, key: &MapKey) -> Result<()> {
        let result = match key {
            MapKey::Endpoint(k) => self.endpoints.remove(k),
            MapKey::Host(k) => self.hosts.remove(k),
            MapKey::Ipcache(k) => self.ipcache.remove(&ipcache_to_aya(k)),
            MapKey::Policy(k) => self.policy.remove(k),
            MapKey::Conntrack(k) => self.conntrack.remove(k),
        };
        deleted(result)
            .map_err(|source| RuntimeError::DeleteMap { map: key.map().pin_name(), source })
    }

    fn config(&self) -> Result<Config> {
        Ok(self.config.read())
    }

    fn set_config(&mut self, config: &Config) -> Result<()> {
        self.config.write(config);
        Ok(())
    }

    fn wait_for_readers(&mut self) -> Result<()> {
        let wait_err = |source| RuntimeError::WaitForReaders { source };
        if self.barrier.is_none() {
            self.barrier = Some(ReaderBarrier::new().map_err(wait_err)?);
        }
        self.barrier.as_ref().map_or(Ok(()), ReaderBarrier::wait).map_err(wait_err)
    }

    fn metrics(&self, row: u32) -> Result<Vec<(Reason, MetricsValue)>> {
        let read_err = |source| RuntimeError::ReadMap { map: map_names::METRICS, source };
        Reason::ALL
            .iter()
            .map(|reason| {
                let index = metrics_index(row, *reason);
                let per_cpu = self.metrics.get(&index, 0).map_err(read_err)?;
                let sum = per_cpu.iter().fold(MetricsValue::default(), |acc, v| MetricsValue {
                    packets: acc.packets + v.packets,
                    bytes: acc.bytes + v.bytes,
                });
                Ok((*reason, sum))
            })
            .collect()
    }

    fn reset_metrics(&mut self, row: u32) -> Result<()> {
        let write_err = |source| RuntimeError::WriteMap { map: map_names::METRICS, source };
        let cpus = aya::util::nr_cpus().map_err(|(_, source)| RuntimeError::Cpus { source })?;
        for slot in 0..capacity::REASONS {
            let zeros = PerCpuValues::try_from(vec![MetricsValue::default(); cpus])
                .map_err(|source| RuntimeError::Cpus { source })?;
            self.metrics.set(row * capacity::REASONS + slot, zeros, 0).map_err(write_err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use datapath::FAMILY_IPV4;

    use super::*;

    #[test]
    fn ipcache_keys_survive_the_lpm_key_conversion() {
        let key =
            IpcacheKey::new(FAMILY_IPV4, [198, 18, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 24);
        let aya_key = ipcache_to_aya(&key);
        assert_eq!(aya_key.prefix_len(), 56);
        assert_eq!(ipcache_from_aya(&aya_key), key);
        // The aya key must have the kernel key's size: prefix length, then the data.
        assert_eq!(size_of::<lpm_trie::Key<IpcacheData>>(), size_of::<IpcacheKey>());
    }
}
