//! A small cluster for the tests of single datapath behaviours (conntrack, fragments,
//! malformed packets), compiled twice: as it is, and after the client's allow to the
//! server is gone, for the tests that change the generation.
//!
//! | pod      | addresses         | ingress                       | egress                      |
//! |----------|-------------------|-------------------------------|-----------------------------|
//! | x/server | 10.1.0.1, fd01::1 | client: TCP 80 (http), UDP 53 | isolated, nothing           |
//! | x/client | 10.1.0.2, fd01::2 | isolated, nothing             | server: all; 192.0.2.0/24:  |
//! |          |                   |                               | TCP 443 (Cilium policy)     |
//! | x/worker | 10.1.0.4, fd01::4 | isolated, nothing             | not isolated                |
//! | x/other  | 10.1.0.3, fd01::3 | not isolated                  | not isolated                |

use std::net::IpAddr;

use compiler::Compilation;
use compiler::artifact::Artifact;
use compiler::reference::Reference;
use policy_lang::{Bundle, Sources};

use super::judge::Live;

pub const SERVER: &str = "10.1.0.1";
pub const CLIENT: &str = "10.1.0.2";
pub const OTHER: &str = "10.1.0.3";
pub const WORKER: &str = "10.1.0.4";
pub const SERVER_V6: &str = "fd01::1";
pub const CLIENT_V6: &str = "fd01::2";
pub const OTHER_V6: &str = "fd01::3";

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: x, labels: {app: server}}
spec:
  containers:
    - name: main
      ports:
        - {name: http, containerPort: 80, protocol: TCP}
        - {name: dns, containerPort: 53, protocol: UDP}
status: {podIP: 10.1.0.1, podIPs: [{ip: 10.1.0.1}, {ip: 'fd01::1'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: x, labels: {app: client}}
spec: {containers: [{name: main}]}
status: {podIP: 10.1.0.2, podIPs: [{ip: 10.1.0.2}, {ip: 'fd01::2'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: x, labels: {app: other}}
spec: {containers: [{name: main}]}
status: {podIP: 10.1.0.3, podIPs: [{ip: 10.1.0.3}, {ip: 'fd01::3'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: worker, namespace: x, labels: {app: worker}}
spec: {containers: [{name: main}]}
status: {podIP: 10.1.0.4, podIPs: [{ip: 10.1.0.4}, {ip: 'fd01::4'}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server, namespace: x}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress, Egress]
  ingress:
    - from: [{podSelector: {matchLabels: {app: client}}}]
      ports: [{port: http}, {protocol: UDP, port: 53}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: isolated-ingress, namespace: x}
spec:
  podSelector:
    matchExpressions: [{key: app, operator: In, values: [client, worker]}]
  policyTypes: [Ingress]
"#;

/// The client's egress: everything to the server, HTTPS to a documentation block.
const CLIENT_EGRESS: &str = r#"
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
    - toEndpoints: [{matchLabels: {app: server}}]
    - toCIDRSet: [{cidr: 192.0.2.0/24}]
      toPorts: [{ports: [{port: "443", protocol: TCP}]}]
"#;

/// The client's egress after the update: the server is no longer allowed.
const CLIENT_EGRESS_AFTER: &str = r#"
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
    - toCIDRSet: [{cidr: 192.0.2.0/24}]
      toPorts: [{ports: [{port: "443", protocol: TCP}]}]
"#;

/// The fixture cluster compiled with the compiler's default options.
#[derive(Debug)]
pub struct Fixture {
    bundle: Bundle,
    compilation: Compilation,
}

impl Fixture {
    /// The cluster as the tests start from.
    pub fn before() -> Fixture {
        Fixture::compile(&[CLUSTER, CLIENT_EGRESS].concat())
    }

    /// The cluster after the client lost its allow to the server.
    pub fn after() -> Fixture {
        Fixture::compile(&[CLUSTER, CLIENT_EGRESS_AFTER].concat())
    }

    fn compile(yaml: &str) -> Fixture {
        let mut sources = Sources::default();
        sources.add("fixture.yaml", yaml);
        let (bundle, compilation) =
            crate::support::compile(&sources).unwrap_or_else(|e| panic!("the fixture: {e}"));
        Fixture { bundle, compilation }
    }

    pub fn artifact(&self) -> &Artifact {
        &self.compilation.artifact
    }

    pub fn reference(&self) -> Reference<'_> {
        Reference::new(&self.bundle, &self.compilation.analysis)
    }

    /// The rule cookie of `policy` (as the artifact names it) and `rule`.
    pub fn cookie(&self, policy: &str, rule: &str) -> u32 {
        let found = self.artifact().rules.iter().find(|r| r.policy == policy && r.rule == rule);
        found.unwrap_or_else(|| panic!("no rule {policy} {rule} in the fixture")).cookie
    }
}

/// A [`Live`] over a fixture and its reference.
pub fn live<'a>(fixture: &'a Fixture, reference: &'a Reference<'a>) -> Live<'a> {
    Live { name: "fixture", artifact: fixture.artifact(), reference }
}

pub fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}
