//! The registry of diagnostic codes. Codes are stable: a code is never reused for
//! another meaning, and a retired code stays listed. Every code here has an entry in
//! docs/diagnostics.md, which a test enforces.

use crate::Severity;

/// A registered diagnostic code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code {
    pub code: &'static str,
    pub severity: Severity,
    /// One line: what the code is about.
    pub title: &'static str,
}

macro_rules! codes {
    ($($name:ident = $code:literal, $sev:ident, $title:literal;)*) => {
        $(
            #[doc = $title]
            pub const $name: Code = Code { code: $code, severity: Severity::$sev, title: $title };
        )*
        /// Every registered code, in code order.
        pub const ALL: &[Code] = &[$($name),*];
    };
}

codes! {
    YAML_SYNTAX = "PL0001", Error, "the file is not valid YAML or JSON";
    NOT_UTF8 = "PL0002", Error, "the file is not UTF-8 text";
    NOT_AN_OBJECT = "PL0003", Error, "a document is not a Kubernetes object (a mapping)";
    MISSING_TYPE_META = "PL0004", Error, "a document lacks apiVersion or kind";
    UNKNOWN_FIELD = "PL0005", Error, "a field the object's schema does not have";
    WRONG_TYPE = "PL0006", Error, "a field has the wrong type";
    MISSING_FIELD = "PL0007", Error, "a required field is missing";
    INVALID_NAME = "PL0008", Error, "an object name or namespace is not a valid DNS label";
    INVALID_LABEL_KEY = "PL0009", Error, "a label key is not valid";
    INVALID_LABEL_VALUE = "PL0010", Error, "a label value is not valid";
    INVALID_SELECTOR = "PL0011", Error, "a label selector expression is not valid";
    INVALID_PROTOCOL = "PL0012", Error, "a protocol is not TCP, UDP or SCTP";
    INVALID_PORT = "PL0013", Error, "a port number or port name is not valid";
    INVALID_END_PORT = "PL0014", Error, "endPort is not valid for its port";
    INVALID_POLICY_TYPE = "PL0015", Error, "a policyTypes entry is not Ingress or Egress";
    INVALID_IP = "PL0016", Error, "an IP address is not valid";
    INVALID_CIDR = "PL0017", Error, "a CIDR is not valid";
    EXCEPT_OUTSIDE_CIDR = "PL0018", Error, "an ipBlock except entry is not inside its cidr";
    DUPLICATE_OBJECT = "PL0019", Error, "two objects of one kind share a namespace and name";
    EMPTY_PEER = "PL0020", Error, "a peer has no selector and no ipBlock";
    EXCLUSIVE_FIELDS = "PL0021", Error, "fields that exclude each other are both set";
    UNKNOWN_NAMESPACE = "PL0022", Warning, "an object refers to a namespace the inventory lacks";
    SELECTOR_MISMATCH = "PL0024", Error, "a workload's selector does not match its pod template's labels";
    EMPTY_WORKLOAD_SELECTOR = "PL0025", Error, "a workload's selector is empty";
    TEMPLATE_NAMESPACE = "PL0026", Warning, "a pod template names a namespace other than its workload's";
    MULTIPLE_CONTROLLERS = "PL0027", Error, "an object has more than one controller owner reference";
    INVALID_ICMP = "PL0028", Error, "an ICMP family or type is not valid";
    INVALID_ENTITY = "PL0029", Error, "an entity is not one Cilium defines";
    TOO_MANY_PORTS = "PL0030", Error, "a toPorts or icmps entry lists more than 40 items";
    RESERVED_LABEL = "PL0031", Warning, "a pod label uses a key reserved for namespace identity";
    NAMESPACED_NODE_SELECTOR = "PL0032", Error, "a namespaced CiliumNetworkPolicy selects nodes";
    HOST_ENDPOINT_NAME_TAKEN = "PL0033", Error, "a node's host endpoint has the name of a pod";
    SKIPPED_KIND = "PL0100", Note, "an object kind that does not affect policy is skipped";
    UNSUPPORTED_API = "PL0101", Error, "a policy kind or apiVersion that is not supported";
    NEEDS_PROXY = "PL0102", Error, "a rule needs a proxy, DNS or a cloud API at run time";
    UNSUPPORTED_FIELD = "PL0103", Error, "a policy field that policyc does not support yet";
    POLICY_SELECTS_NOTHING = "PL0200", Warning, "a policy selects no pod (or, a host policy, no node) of the inventory";
    PEER_SELECTS_NOTHING = "PL0201", Warning, "a peer selects no pod of the inventory";
    POD_NOT_ISOLATED = "PL0202", Warning, "a pod is not isolated by any policy";
    EGRESS_BLOCKS_DNS = "PL0203", Warning, "egress isolation blocks DNS";
    RULE_SHADOWED = "PL0204", Warning, "a rule allows nothing that other rules do not already allow";
    CIDR_CONTAINS_PODS = "PL0205", Warning, "a CIDR peer contains pod addresses, which it does not match";
    CAPACITY_EXCEEDED = "PL0300", Error, "the compiled tables exceed a map's capacity";
}

/// Codes that no check reports any more. They stay listed, with their documentation, so
/// that a script matching on one keeps working and the number is never given to another
/// check.
pub const RETIRED: &[Code] = &[
    // Port ranges were written as one key per port, up to 256; they are now the fewest
    // aligned port blocks (at most 30), so every range compiles.
    Code {
        code: "PL0023",
        severity: Severity::Error,
        title: "a port range is wider than the compiler expands",
    },
];
