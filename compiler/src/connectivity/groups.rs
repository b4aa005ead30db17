//! Groups: which workload, bare pod or outside address range a peer belongs to.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use policy_lang::Bundle;
use policy_lang::ast::{Cidr, Pod, Workload};

/// A set of peers connectivity is reported between.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Group {
    /// The pods of a workload: the topmost owner reached by following controller
    /// references (Pod -> ReplicaSet -> Deployment, Pod -> Job -> CronJob, ...).
    Workload { namespace: String, kind: String, name: String },
    /// A pod without a controller.
    Pod { namespace: String, name: String },
    /// A node's host endpoint (`node/<name>`), which host policies select.
    Host { name: String },
    /// The outside addresses in this prefix that no longer prefix of the address table
    /// covers.
    Cidr(Cidr),
    /// The cluster's node addresses.
    Nodes,
    /// Every outside address no prefix of the address table covers.
    World,
}

impl Group {
    /// `workload`, `pod`, `host`, `cidr`, `nodes` or `world`.
    pub fn kind(&self) -> &'static str {
        match self {
            Group::Workload { .. } => "workload",
            Group::Pod { .. } => "pod",
            Group::Host { .. } => "host",
            Group::Cidr(_) => "cidr",
            Group::Nodes => "nodes",
            Group::World => "world",
        }
    }

    /// True for groups of endpoints (pods, or a node's host endpoint), whose own
    /// policies are enforced.
    pub fn is_pods(&self) -> bool {
        matches!(self, Group::Workload { .. } | Group::Pod { .. } | Group::Host { .. })
    }

    /// Pods of a namespace sort together, workloads and bare pods by name, then the
    /// outside groups.
    fn sort_key(&self) -> (u8, &str, &str, u8, &str, Option<&Cidr>) {
        match self {
            Group::Workload { namespace, kind, name } => (0, namespace, name, 0, kind, None),
            Group::Pod { namespace, name } => (0, namespace, name, 1, "", None),
            Group::Host { name } => (1, "", name, 0, "", None),
            Group::Cidr(cidr) => (2, "", "", 0, "", Some(cidr)),
            Group::Nodes => (3, "", "", 0, "", None),
            Group::World => (4, "", "", 0, "", None),
        }
    }
}

impl Ord for Group {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.sort_key().cmp(&other.sort_key())
    }
}

impl PartialOrd for Group {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Group::Workload { namespace, kind, name } => write!(f, "{kind} {namespace}/{name}"),
            Group::Pod { namespace, name } => write!(f, "Pod {namespace}/{name}"),
            Group::Host { name } => write!(f, "Node {name}"),
            Group::Cidr(cidr) => write!(f, "{cidr}"),
            Group::Nodes => f.write_str("nodes"),
            Group::World => f.write_str("world"),
        }
    }
}

/// Which group each endpoint (`namespace/pod`) belongs to. An endpoint it does not know
/// is a bare pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grouping {
    groups: BTreeMap<String, Group>,
}

impl Grouping {
    /// Groups the bundle's pods by owner. The climb follows each controller reference to
    /// the workload of that kind and name in the pod's namespace, and on to that
    /// workload's own controller, while the inputs hold the object named; the group is
    /// the last owner named. So a pod whose ReplicaSet is not among the inputs is grouped
    /// by that ReplicaSet, and one whose ReplicaSet is, by the ReplicaSet's Deployment.
    pub fn from_bundle(bundle: &Bundle) -> Grouping {
        let workloads: BTreeMap<(&str, &str, &str), _> = bundle
            .workloads
            .iter()
            .map(|w| ((w.meta.namespace.as_str(), w.kind.name(), w.meta.name.value.as_str()), w))
            .collect();
        let groups = bundle
            .pods
            .iter()
            .map(|pod| {
                let name = format!("{}/{}", pod.meta.namespace, pod.meta.name.value);
                (name, owner_group(pod, &workloads))
            })
            .collect();
        Grouping { groups }
    }

    /// Adds the endpoints of `other` that `self` does not know.
    pub fn extend(&mut self, other: &Grouping) {
        for (name, group) in &other.groups {
            self.groups.entry(name.clone()).or_insert_with(|| group.clone());
        }
    }

    /// The group of the endpoint named `namespace/pod`, or of a host endpoint
    /// (`node/<name>`, never a pod's name in a compiled artifact: PL0033).
    pub fn group_of(&self, endpoint: &str) -> Group {
        if !self.groups.contains_key(endpoint)
            && let Some(name) = endpoint.strip_prefix(crate::HOST_ENDPOINT_PREFIX)
        {
            return Group::Host { name: name.into() };
        }
        self.groups.get(endpoint).cloned().unwrap_or_else(|| {
            let (namespace, name) = endpoint.split_once('/').unwrap_or(("", endpoint));
            Group::Pod { namespace: namespace.into(), name: name.into() }
        })
    }
}

fn owner_group(pod: &Pod, workloads: &BTreeMap<(&str, &str, &str), &Workload>) -> Group {
    let namespace = pod.meta.namespace.as_str();
    let Some(mut owner) = pod.owner.as_ref() else {
        return Group::Pod { namespace: namespace.into(), name: pod.meta.name.value.clone() };
    };
    // Owner references can form a cycle in hand-written input; each owner is followed once.
    let mut seen = BTreeSet::from([(owner.kind.as_str(), owner.name.as_str())]);
    while let Some(up) = workloads
        .get(&(namespace, owner.kind.as_str(), owner.name.as_str()))
        .and_then(|w| w.owner.as_ref())
        .filter(|up| seen.insert((up.kind.as_str(), up.name.as_str())))
    {
        owner = up;
    }
    Group::Workload {
        namespace: namespace.into(),
        kind: owner.kind.clone(),
        name: owner.name.clone(),
    }
}
