//! What the embedded datapath object declares, read offline: each map's layout.
//!
//! aya reuses a pinned map of the right name whatever its layout. The runtime compares
//! every pinned map with the object's declaration first, and refuses a mismatch.

use std::{collections::BTreeMap, fmt};

use aya::maps::MapInfo;
use aya_obj::generated::bpf_map_type;

use crate::error::{Result, RuntimeError};

/// The part of a map's definition that must match between a pin and the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapLayout {
    /// `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// `BPF_F_*` creation flags.
    pub flags: u32,
}

impl MapLayout {
    /// The layout of a map the kernel describes.
    pub fn of(info: &MapInfo) -> MapLayout {
        MapLayout {
            // `MapType` mirrors the kernel's numbers; an unknown type becomes the
            // out-of-range marker, which never equals a real type.
            map_type: info.map_type().map_or(bpf_map_type::__MAX_BPF_MAP_TYPE as u32, |t| t as u32),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        }
    }
}

impl fmt::Display for MapLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (key {} bytes, value {} bytes, {} entries, flags {:#x})",
            type_name(self.map_type),
            self.key_size,
            self.value_size,
            self.max_entries,
            self.flags
        )
    }
}

fn type_name(map_type: u32) -> String {
    let known = [
        (bpf_map_type::BPF_MAP_TYPE_HASH, "hash"),
        (bpf_map_type::BPF_MAP_TYPE_ARRAY, "array"),
        (bpf_map_type::BPF_MAP_TYPE_PERCPU_HASH, "percpu hash"),
        (bpf_map_type::BPF_MAP_TYPE_PERCPU_ARRAY, "percpu array"),
        (bpf_map_type::BPF_MAP_TYPE_LRU_HASH, "LRU hash"),
        (bpf_map_type::BPF_MAP_TYPE_LPM_TRIE, "LPM trie"),
    ];
    known
        .iter()
        .find(|(t, _)| *t as u32 == map_type)
        .map_or_else(|| format!("map type {map_type}"), |(_, name)| (*name).to_owned())
}

/// The maps the embedded object declares, by name.
#[derive(Clone, Debug)]
pub struct ObjectSpec {
    pub maps: BTreeMap<String, MapLayout>,
}

impl ObjectSpec {
    /// Parses [`datapath::OBJECT`].
    pub fn embedded() -> Result<ObjectSpec> {
        ObjectSpec::parse(datapath::OBJECT)
    }

    /// Parses an object's map definitions.
    pub fn parse(object: &[u8]) -> Result<ObjectSpec> {
        let object = aya_obj::Object::parse(object)
            .map_err(|source| RuntimeError::ParseObject { source })?;
        let maps = object
            .maps
            .iter()
            .map(|(name, map)| {
                let layout = MapLayout {
                    map_type: map.map_type(),
                    key_size: map.key_size(),
                    value_size: map.value_size(),
                    max_entries: map.max_entries(),
                    flags: map.map_flags(),
                };
                (name.clone(), layout)
            })
            .collect();
        Ok(ObjectSpec { maps })
    }

    /// The declared layout of map `name`.
    pub fn map(&self, name: &str) -> Result<MapLayout> {
        self.maps
            .get(name)
            .copied()
            .ok_or_else(|| RuntimeError::MissingInObject { kind: "map", name: name.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use datapath::{
        CtKey, CtValue, EndpointInfo, IpcacheKey, IpcacheValue, MetricsValue, PolicyKey,
        PolicyValue, capacity, map_names,
    };

    use super::*;

    #[test]
    fn embedded_object_declares_the_maps_the_runtime_mirrors() {
        let spec = ObjectSpec::embedded().unwrap();
        let expect = |name, t: bpf_map_type, key: usize, value: usize, max| {
            let layout = spec.map(name).unwrap();
            assert_eq!(
                (layout.map_type, layout.key_size as usize, layout.value_size as usize),
                (t as u32, key, value),
                "{name}: {layout}"
            );
            assert_eq!(layout.max_entries, max, "{name}");
        };
        use bpf_map_type::*;
        expect(
            map_names::ENDPOINTS,
            BPF_MAP_TYPE_HASH,
            4,
            size_of::<EndpointInfo>(),
            capacity::ENDPOINTS,
        );
        expect(
            map_names::IPCACHE,
            BPF_MAP_TYPE_LPM_TRIE,
            size_of::<IpcacheKey>(),
            size_of::<IpcacheValue>(),
            capacity::IPCACHE,
        );
        expect(
            map_names::POLICY,
            BPF_MAP_TYPE_HASH,
            size_of::<PolicyKey>(),
            size_of::<PolicyValue>(),
            capacity::POLICY,
        );
        expect(
            map_names::CONNTRACK,
            BPF_MAP_TYPE_LRU_HASH,
            size_of::<CtKey>(),
            size_of::<CtValue>(),
            capacity::CONNTRACK,
        );
        expect(
            map_names::METRICS,
            BPF_MAP_TYPE_PERCPU_ARRAY,
            4,
            size_of::<MetricsValue>(),
            capacity::METRICS,
        );
    }

    #[test]
    fn a_missing_map_is_named() {
        let spec = ObjectSpec::embedded().unwrap();
        let err = spec.map("nope").unwrap_err();
        assert_eq!(err.to_string(), "the embedded datapath object has no map named nope");
    }

    #[test]
    fn layouts_print_both_sides_readably() {
        let layout =
            MapLayout { map_type: 11, key_size: 24, value_size: 8, max_entries: 5, flags: 1 };
        assert_eq!(
            layout.to_string(),
            "LPM trie (key 24 bytes, value 8 bytes, 5 entries, flags 0x1)"
        );
    }
}
