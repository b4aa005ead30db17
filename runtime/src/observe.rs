//! Verdict events from the datapath's ring buffer, explained with the live artifact.
//!
//! The datapath sends an [`Event`] for every drop (and, if asked, every flow policy
//! newly allows), rate-limited per CPU. An event names identities, endpoints and rules
//! by number; [`Explainer`] turns them into labels, `namespace/pod` names and the rule's
//! policy and source line, using the artifact whose checksum the config map records as
//! live (see [`crate::store`]). Events judged just before an apply switched generations
//! are explained with the new artifact; their numbers are then usually the same ones,
//! because identity numbers and rule cookies are stable across compiles.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use aya::maps::{Map, MapData, RingBuf};
use compiler::artifact::{Artifact, RuleRecord};
use datapath::{Event, FAMILY_IPV4, FAMILY_IPV6, Reason, map_names};

use crate::{
    error::{Result, RuntimeError},
    kernel::open_checked,
    pins::PinDir,
    spec::ObjectSpec,
    store::ArtifactStore,
    sync::ConfigMapping,
};

/// One side of a flow, as far as the artifact knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Party {
    pub address: Option<IpAddr>,
    pub port: Option<u16>,
    /// Security identity; 0 when the datapath did not look it up.
    pub identity: u32,
    /// The identity's labels, when the artifact has the identity.
    pub labels: Vec<(String, String)>,
    /// `namespace/pod` of the endpoint, for the endpoint's own side.
    pub endpoint: Option<String>,
}

/// A verdict event with names instead of numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub event: Event,
    pub reason: Option<Reason>,
    /// "ingress" (to the endpoint) or "egress" (from it).
    pub direction: &'static str,
    pub protocol: String,
    /// The endpoint whose interface judged the packet.
    pub local: Party,
    /// The other end.
    pub peer: Party,
    /// The deciding rule, when a policy entry decided.
    pub rule: Option<RuleRecord>,
}

impl Observed {
    /// True for drops.
    pub fn is_drop(&self) -> bool {
        self.event.reason < 0
    }

    /// The source and destination, in packet order.
    pub fn source_destination(&self) -> (&Party, &Party) {
        if self.direction == "ingress" {
            (&self.peer, &self.local)
        } else {
            (&self.local, &self.peer)
        }
    }
}

/// Which events `observe` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// `Some(true)`: drops only; `Some(false)`: passes only.
    pub drops: Option<bool>,
    /// `namespace/pod` of the local endpoint.
    pub endpoint: Option<String>,
    /// Either side's identity.
    pub identity: Option<u32>,
    /// A label (`key=value`, or `key` for any value) either side's identity carries.
    pub label: Option<(String, Option<String>)>,
    /// IP protocol number.
    pub protocol: Option<u8>,
}

impl Filter {
    pub fn matches(&self, seen: &Observed) -> bool {
        let sides = [&seen.local, &seen.peer];
        self.drops.is_none_or(|drops| drops == seen.is_drop())
            && self.endpoint.as_ref().is_none_or(|e| seen.local.endpoint.as_ref() == Some(e))
            && self.identity.is_none_or(|id| sides.iter().any(|p| p.identity == id))
            && self.protocol.is_none_or(|p| p == seen.event.proto)
            && self.label.as_ref().is_none_or(|(key, value)| {
                sides.iter().any(|p| {
                    p.labels.iter().any(|(k, v)| {
                        label_key(k) == key && value.as_ref().is_none_or(|value| v == value)
                    })
                })
            })
    }
}

/// A label key without its source prefix (`k8s:app` is `app`).
fn label_key(key: &str) -> &str {
    key.split_once(':').map_or(key, |(_, k)| k)
}

/// Turns events into [`Observed`] with one artifact.
#[derive(Debug)]
pub struct Explainer {
    artifact: Option<Artifact>,
}

impl Explainer {
    /// `artifact` is the live one, if the store has it.
    pub fn new(artifact: Option<Artifact>) -> Self {
        Explainer { artifact }
    }

    pub fn has_artifact(&self) -> bool {
        self.artifact.is_some()
    }

    pub fn explain(&self, event: &Event) -> Observed {
        let ingress = event.direction == datapath::DIR_INGRESS;
        let (local_addr, peer_addr) = if ingress {
            (address(event.family, &event.daddr), address(event.family, &event.saddr))
        } else {
            (address(event.family, &event.saddr), address(event.family, &event.daddr))
        };
        let ported = matches!(event.proto, 6 | 17 | 132);
        let (local_port, peer_port) = match (ported, ingress) {
            (false, _) => (None, None),
            (true, true) => (Some(event.dport), Some(event.sport)),
            (true, false) => (Some(event.sport), Some(event.dport)),
        };
        let local = Party {
            address: local_addr,
            port: local_port,
            identity: event.identity,
            labels: self.labels(event.identity),
            endpoint: self.endpoint_name(event.endpoint_id),
        };
        let peer = Party {
            address: peer_addr,
            port: peer_port,
            identity: event.peer_identity,
            labels: self.labels(event.peer_identity),
            endpoint: peer_addr.and_then(|a| self.endpoint_at(a)),
        };
        let rule = (event.rule != 0)
            .then(|| self.artifact.as_ref().and_then(|a| a.rule(event.rule)).cloned())
            .flatten();
        Observed {
            event: *event,
            reason: Reason::from_code(event.reason),
            direction: if ingress { "ingress" } else { "egress" },
            protocol: protocol_name(event.proto, event.dport),
            local,
            peer,
            rule,
        }
    }

    fn labels(&self, identity: u32) -> Vec<(String, String)> {
        let Some(artifact) = &self.artifact else { return vec![] };
        artifact
            .identities
            .iter()
            .find(|i| i.id == identity && identity != 0)
            .map(|i| i.labels.clone())
            .unwrap_or_default()
    }

    /// The endpoint (pod) with this address, if the artifact has one.
    fn endpoint_at(&self, address: IpAddr) -> Option<String> {
        let artifact = self.artifact.as_ref()?;
        let found = artifact.endpoints.iter().find(|e| e.addresses.contains(&address));
        found.map(|e| e.name.clone())
    }

    fn endpoint_name(&self, endpoint_id: u32) -> Option<String> {
        let artifact = self.artifact.as_ref()?;
        let found = artifact.endpoints.iter().find(|e| e.endpoint_id == endpoint_id);
        found.map(|e| e.name.clone())
    }
}

fn address(family: u8, bytes: &[u8; 16]) -> Option<IpAddr> {
    match family {
        FAMILY_IPV4 => Some(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
        FAMILY_IPV6 => Some(IpAddr::V6(Ipv6Addr::from(*bytes))),
        _ => None,
    }
}

/// `TCP`, `UDP`, `SCTP`, `ICMP type 8`, or the protocol number.
fn protocol_name(proto: u8, dport: u16) -> String {
    match proto {
        6 => "TCP".into(),
        17 => "UDP".into(),
        132 => "SCTP".into(),
        1 => format!("ICMP type {dport}"),
        58 => format!("ICMPv6 type {dport}"),
        0 => "-".into(),
        n => format!("proto {n}"),
    }
}

/// The event ring buffer of a pin directory, read as events arrive.
pub struct Observer {
    ring: RingBuf<MapData>,
    config: ConfigMapping,
    store: ArtifactStore,
    /// The checksum the explainer's artifact has, to reload it after an apply.
    checksum: Option<[u8; 32]>,
    explainer: Explainer,
    /// Events judged before this time (`CLOCK_MONOTONIC_COARSE`, the datapath's clock) are
    /// skipped: the ring buffer keeps what nobody read, possibly from long ago.
    since_ns: u64,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer").field("store", &self.store).finish_non_exhaustive()
    }
}

impl Observer {
    /// Opens the ring buffer and config map pinned in `pin_dir`; artifacts come from the
    /// store in `state_dir`. With `backlog`, events already waiting are handed out too;
    /// otherwise only those judged from now on.
    pub fn open(pin_dir: &Path, state_dir: &Path, backlog: bool) -> Result<Observer> {
        let pins = PinDir::new(pin_dir);
        if pins.map(map_names::EVENTS).symlink_metadata().is_err() {
            return Err(RuntimeError::NotInstalled { path: pin_dir.to_owned() });
        }
        let spec = ObjectSpec::embedded()?;
        let path = pins.map(map_names::EVENTS);
        let ring = RingBuf::try_from(Map::RingBuf(open_checked(&path, map_names::EVENTS, &spec)?))
            .map_err(|source| RuntimeError::OpenMap { path: path.clone(), source })?;
        let config_path = pins.map(map_names::CONFIG);
        let config = ConfigMapping::new(
            open_checked(&config_path, map_names::CONFIG, &spec)?,
            &config_path,
        )?;
        let mut observer = Observer {
            ring,
            config,
            store: ArtifactStore::new(state_dir),
            checksum: None,
            explainer: Explainer::new(None),
            since_ns: if backlog { 0 } else { monotonic_ns() },
        };
        observer.refresh()?;
        Ok(observer)
    }

    /// Whether the live artifact was found in the store (else events show numbers).
    pub fn has_artifact(&self) -> bool {
        self.explainer.has_artifact()
    }

    /// Reloads the explaining artifact if another one became live.
    fn refresh(&mut self) -> Result<()> {
        let live = self.config.read().artifact_checksum;
        if self.checksum != Some(live) {
            let artifact = self.store.load(&live)?;
            if artifact.is_none() {
                tracing::warn!(
                    store = %self.store.dir().display(),
                    "the live artifact is not in the store: events show numbers, not names"
                );
            }
            self.explainer = Explainer::new(artifact);
            self.checksum = Some(live);
        }
        Ok(())
    }

    /// Hands every event waiting in the ring buffer to `each`, explained; returns how
    /// many there were.
    pub fn drain(&mut self, mut each: impl FnMut(Observed)) -> Result<usize> {
        self.refresh()?;
        let mut count = 0;
        while let Some(item) = self.ring.next() {
            if let Some(event) = Event::from_bytes(&item)
                && event.timestamp_ns >= self.since_ns
            {
                each(self.explainer.explain(&event));
                count += 1;
            }
        }
        Ok(count)
    }
}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds, the clock of `bpf_ktime_get_coarse_ns()` with
/// which the datapath stamps events.
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec the call fills; the clock exists since Linux 2.6.32.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use compiler::artifact::{EndpointRecord, IdentityRecord};

    use super::*;

    fn artifact() -> Artifact {
        let labels = |app: &str| {
            vec![
                ("k8s:app".to_owned(), app.to_owned()),
                ("k8s:io.kubernetes.pod.namespace".to_owned(), "shop".to_owned()),
            ]
        };
        Artifact {
            identities: vec![
                IdentityRecord { id: 256, labels: labels("web") },
                IdentityRecord { id: 257, labels: labels("db") },
            ],
            endpoints: vec![
                EndpointRecord {
                    name: "shop/db-0".into(),
                    endpoint_id: 9,
                    identity: 257,
                    ingress_table: 1,
                    egress_table: 0,
                    addresses: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))],
                },
                EndpointRecord {
                    name: "shop/web-0".into(),
                    endpoint_id: 8,
                    identity: 256,
                    ingress_table: 0,
                    egress_table: 0,
                    addresses: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))],
                },
            ],
            rules: vec![RuleRecord {
                cookie: 4,
                policy: "NetworkPolicy shop/db".into(),
                rule: "ingress[0]".into(),
                location: "db.yaml:12".into(),
            }],
            ..Artifact::default()
        }
    }

    /// A TCP SYN from web (10.0.0.1:40000) to db (10.0.0.2:5432), dropped at db's ingress.
    fn drop_event() -> Event {
        let mut event = Event {
            endpoint_id: 9,
            identity: 257,
            peer_identity: 256,
            reason: Reason::DropPolicyDeny.code(),
            rule: 4,
            direction: datapath::DIR_INGRESS,
            family: FAMILY_IPV4,
            proto: 6,
            sport: 40000,
            dport: 5432,
            ..Event::default()
        };
        event.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        event.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        event
    }

    #[test]
    fn an_event_is_explained_with_names_labels_and_the_rule() {
        let seen = Explainer::new(Some(artifact())).explain(&drop_event());

        assert!(seen.is_drop());
        assert_eq!(seen.reason, Some(Reason::DropPolicyDeny));
        assert_eq!(seen.local.endpoint.as_deref(), Some("shop/db-0"));
        assert_eq!(seen.local.port, Some(5432));
        assert_eq!(seen.peer.address, Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
        assert_eq!(seen.peer.labels[0], ("k8s:app".to_owned(), "web".to_owned()));
        assert_eq!(seen.peer.endpoint.as_deref(), Some("shop/web-0"), "found by address");
        assert_eq!(seen.rule.as_ref().map(|r| r.location.as_str()), Some("db.yaml:12"));
        let (source, destination) = seen.source_destination();
        assert_eq!((source.port, destination.port), (Some(40000), Some(5432)));
    }

    #[test]
    fn without_the_artifact_an_event_keeps_its_numbers() {
        let seen = Explainer::new(None).explain(&drop_event());
        assert_eq!((seen.local.identity, seen.peer.identity), (257, 256));
        assert!(seen.peer.labels.is_empty() && seen.rule.is_none());
    }

    #[test]
    fn filters_select_by_verdict_endpoint_identity_label_and_protocol() {
        let seen = Explainer::new(Some(artifact())).explain(&drop_event());
        let label = |k: &str, v: Option<&str>| Some((k.to_owned(), v.map(str::to_owned)));
        let pass = [
            Filter::default(),
            Filter { drops: Some(true), ..Filter::default() },
            Filter { endpoint: Some("shop/db-0".into()), ..Filter::default() },
            Filter { identity: Some(256), ..Filter::default() },
            Filter { label: label("app", Some("web")), ..Filter::default() },
            Filter { label: label("app", None), protocol: Some(6), ..Filter::default() },
        ];
        let fail = [
            Filter { drops: Some(false), ..Filter::default() },
            Filter { endpoint: Some("shop/web-0".into()), ..Filter::default() },
            Filter { identity: Some(300), ..Filter::default() },
            Filter { label: label("app", Some("cache")), ..Filter::default() },
            Filter { protocol: Some(17), ..Filter::default() },
        ];
        for filter in pass {
            assert!(filter.matches(&seen), "{filter:?}");
        }
        for filter in fail {
            assert!(!filter.matches(&seen), "{filter:?}");
        }
    }
}
