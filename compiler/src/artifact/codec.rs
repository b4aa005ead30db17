//! Byte encoding of [`Artifact`]. See docs/artifact-format.md for the layout.
//!
//! The decoder treats its input as hostile: every length is checked against what is
//! left before anything is allocated, so a corrupt or malicious file gives an
//! [`ArtifactError`], never a panic or a huge allocation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use datapath::{IpcacheKey, PolicyKey, PolicyVerdict};
use sha2::{Digest, Sha256};

use super::{Artifact, EndpointRecord, IdentityLabelRules, IdentityRecord, RuleRecord};

/// First bytes of every artifact.
pub const MAGIC: [u8; 8] = *b"PLCYMAP\0";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 4;

const HEADER_LEN: usize = 8 + 2 + 2 + 8 + 32;
const CHECKSUM_LEN: usize = 32;

const SECTION_IDENTITIES: u32 = 1;
const SECTION_ENDPOINTS: u32 = 2;
const SECTION_IPCACHE: u32 = 3;
const SECTION_POLICY: u32 = 4;
const SECTION_RULES: u32 = 5;
const SECTION_IDENTITY_LABELS: u32 = 6;

/// Kinds of an identity label rule in section 6.
const LABEL_SELECTED: u8 = 0;
const LABEL_INCLUDE: u8 = 1;
const LABEL_EXCLUDE: u8 = 2;

/// Why an artifact could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArtifactError {
    /// The input ends before a complete header, section or checksum.
    #[error("artifact is truncated: {what} needs {needed} bytes at offset {offset}, {left} left")]
    Truncated { what: &'static str, offset: usize, needed: usize, left: usize },
    /// The input does not start with [`MAGIC`]: not an artifact at all.
    #[error("not a policyc artifact (bad magic)")]
    BadMagic,
    /// Written by a policyc with another format version.
    #[error(
        "artifact format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedVersion { found: u16, supported: u16 },
    /// Compiled against other datapath map layouts than this build's.
    #[error(
        "artifact was compiled for datapath ABI {found:016x}, this build's datapath is {expected:016x}: recompile it with a matching policyc"
    )]
    AbiMismatch { found: u64, expected: u64 },
    /// The trailing SHA-256 does not match the content: the file was corrupted.
    #[error("artifact checksum mismatch: the file is corrupted")]
    ChecksumMismatch,
    /// The content is well framed but a field is invalid.
    #[error("artifact is malformed: {0}")]
    Malformed(String),
}

impl Artifact {
    /// Encodes the artifact. The same artifact (in any list order) gives the same bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut sorted = self.clone();
        sorted.normalize();

        let mut out = Writer::default();
        out.bytes(&MAGIC);
        out.u16(FORMAT_VERSION);
        out.u16(0);
        out.u64(datapath::abi_hash());
        out.bytes(&sorted.source_digest);

        out.section(SECTION_IDENTITIES, |w| {
            w.u32(len32(sorted.identities.len()));
            for identity in &sorted.identities {
                w.u32(identity.id);
                w.u32(len32(identity.labels.len()));
                for (key, value) in &identity.labels {
                    w.str(key);
                    w.str(value);
                }
            }
        });
        out.section(SECTION_ENDPOINTS, |w| {
            w.u32(len32(sorted.endpoints.len()));
            for ep in &sorted.endpoints {
                w.str(&ep.name);
                w.u32(ep.endpoint_id);
                w.u32(ep.identity);
                w.u32(ep.ingress_table);
                w.u32(ep.egress_table);
                w.u32(len32(ep.addresses.len()));
                for address in &ep.addresses {
                    w.ip(*address);
                }
            }
        });
        out.section(SECTION_IPCACHE, |w| {
            w.u32(len32(sorted.ipcache.len()));
            for (key, identity) in &sorted.ipcache {
                w.u32(key.prefixlen);
                w.u8(key.family);
                w.bytes(&key.addr);
                w.u32(*identity);
            }
        });
        out.section(SECTION_POLICY, |w| {
            w.u32(len32(sorted.policy.len()));
            for (key, value) in &sorted.policy {
                w.u32(key.table);
                w.u32(key.identity);
                w.u8(key.proto);
                w.u8(key.port_bits);
                w.u16(key.port);
                w.u8(value.verdict);
                w.u32(value.rule);
            }
        });
        out.section(SECTION_RULES, |w| {
            w.u32(len32(sorted.rules.len()));
            for rule in &sorted.rules {
                w.u32(rule.cookie);
                w.str(&rule.policy);
                w.str(&rule.rule);
                w.str(&rule.location);
            }
        });
        out.section(SECTION_IDENTITY_LABELS, |w| {
            let rules = &sorted.identity_labels;
            let all = [
                (LABEL_SELECTED, &rules.selected),
                (LABEL_INCLUDE, &rules.include),
                (LABEL_EXCLUDE, &rules.exclude),
            ];
            w.u32(len32(all.iter().map(|(_, keys)| keys.len()).sum()));
            for (kind, keys) in all {
                for key in keys {
                    w.u8(kind);
                    w.str(key);
                }
            }
        });

        let checksum = Sha256::digest(&out.buf);
        out.bytes(&checksum);
        out.buf
    }

    /// Decodes and verifies an artifact: magic, version, datapath ABI, checksum, then
    /// every section.
    pub fn decode(input: &[u8]) -> Result<Artifact, ArtifactError> {
        let mut header = Reader { buf: input, at: 0 };
        if input.len() < MAGIC.len() || input[..MAGIC.len()] != MAGIC {
            return Err(ArtifactError::BadMagic);
        }
        header.take(MAGIC.len(), "magic")?;
        let version = header.u16("format version")?;
        if version != FORMAT_VERSION {
            return Err(ArtifactError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let flags = header.u16("flags")?;
        if flags != 0 {
            // No flag is defined in this version: a set bit means a newer writer that
            // expects us to honour something we do not know.
            return Err(ArtifactError::Malformed(format!("unknown header flags {flags:#06x}")));
        }
        let abi = header.u64("datapath ABI hash")?;
        if abi != datapath::abi_hash() {
            return Err(ArtifactError::AbiMismatch { found: abi, expected: datapath::abi_hash() });
        }
        if input.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(ArtifactError::Truncated {
                what: "header and checksum",
                offset: 0,
                needed: HEADER_LEN + CHECKSUM_LEN,
                left: input.len(),
            });
        }
        let (content, checksum) = input.split_at(input.len() - CHECKSUM_LEN);
        if Sha256::digest(content).as_slice() != checksum {
            return Err(ArtifactError::ChecksumMismatch);
        }

        let mut r = Reader { buf: content, at: header.at };
        let mut artifact = Artifact::default();
        artifact.source_digest.copy_from_slice(r.take(32, "source digest")?);

        let mut body = r.section(SECTION_IDENTITIES, "identities")?;
        for _ in 0..body.count("identity count", 8)? {
            let id = body.u32("identity")?;
            let mut labels = Vec::new();
            for _ in 0..body.count("label count", 8)? {
                labels.push((body.str("label key")?, body.str("label value")?));
            }
            artifact.identities.push(IdentityRecord { id, labels });
        }
        body.finish("identities")?;

        let mut body = r.section(SECTION_ENDPOINTS, "endpoints")?;
        for _ in 0..body.count("endpoint count", 24)? {
            let name = body.str("endpoint name")?;
            let endpoint_id = body.u32("endpoint id")?;
            let identity = body.u32("endpoint identity")?;
            let ingress_table = body.u32("ingress table")?;
            let egress_table = body.u32("egress table")?;
            let mut addresses = Vec::new();
            for _ in 0..body.count("address count", 5)? {
                addresses.push(body.ip()?);
            }
            artifact.endpoints.push(EndpointRecord {
                name,
                endpoint_id,
                identity,
                ingress_table,
                egress_table,
                addresses,
            });
        }
        body.finish("endpoints")?;

        let mut body = r.section(SECTION_IPCACHE, "ipcache")?;
        for _ in 0..body.count("ipcache count", 25)? {
            let prefixlen = body.u32("prefix length")?;
            let family = body.u8("family")?;
            let mut addr = [0u8; 16];
            addr.copy_from_slice(body.take(16, "address")?);
            let key = IpcacheKey { prefixlen, family, pad: [0; 3], addr };
            let max_bits = match family {
                datapath::FAMILY_IPV4 => 32,
                datapath::FAMILY_IPV6 => 128,
                other => return Err(ArtifactError::Malformed(format!("address family {other}"))),
            };
            if key.prefix_bits() > max_bits || prefixlen < IpcacheKey::HEADER_BITS {
                return Err(ArtifactError::Malformed(format!("prefix length {prefixlen}")));
            }
            artifact.ipcache.push((key, body.u32("identity")?));
        }
        body.finish("ipcache")?;

        let mut body = r.section(SECTION_POLICY, "policy")?;
        for _ in 0..body.count("policy count", 17)? {
            let key = PolicyKey {
                table: body.u32("table")?,
                identity: body.u32("identity")?,
                proto: body.u8("protocol")?,
                port_bits: body.u8("port_bits")?,
                port: body.u16("port")?,
            };
            // A key the datapath can never look up would be a dead entry, and a port_bits
            // beyond 16 would make the endpoint's lookup mask meaningless: both refused.
            if !key.is_well_formed() {
                return Err(ArtifactError::Malformed(format!(
                    "policy key proto {} port {} with {} port bits",
                    key.proto, key.port, key.port_bits
                )));
            }
            let verdict = body.u8("verdict")?;
            if !matches!(verdict, datapath::VERDICT_ALLOW | datapath::VERDICT_DENY) {
                return Err(ArtifactError::Malformed(format!("verdict {verdict}")));
            }
            let value = PolicyVerdict { verdict, pad: [0; 3], rule: body.u32("rule")? };
            artifact.policy.push((key, value));
        }
        body.finish("policy")?;

        let mut body = r.section(SECTION_RULES, "rules")?;
        for _ in 0..body.count("rule count", 16)? {
            artifact.rules.push(RuleRecord {
                cookie: body.u32("cookie")?,
                policy: body.str("policy")?,
                rule: body.str("rule")?,
                location: body.str("location")?,
            });
        }
        body.finish("rules")?;

        let mut body = r.section(SECTION_IDENTITY_LABELS, "identity labels")?;
        let mut rules = IdentityLabelRules::default();
        for _ in 0..body.count("identity label count", 5)? {
            let kind = body.u8("identity label kind")?;
            let key = body.str("identity label key")?;
            match kind {
                LABEL_SELECTED => rules.selected.push(key),
                LABEL_INCLUDE => rules.include.push(key),
                LABEL_EXCLUDE => rules.exclude.push(key),
                other => {
                    return Err(ArtifactError::Malformed(format!("identity label kind {other}")));
                }
            }
        }
        body.finish("identity labels")?;
        artifact.identity_labels = rules;
        r.finish("artifact")?;

        Ok(artifact)
    }
}

fn len32(len: usize) -> u32 {
    u32::try_from(len).expect("artifact lists are bounded by map capacities far below u32::MAX")
}

#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(len32(s.len()));
        self.bytes(s.as_bytes());
    }
    fn ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => {
                self.u8(datapath::FAMILY_IPV4);
                self.bytes(&v4.octets());
            }
            IpAddr::V6(v6) => {
                self.u8(datapath::FAMILY_IPV6);
                self.bytes(&v6.octets());
            }
        }
    }
    /// Writes `tag`, a length placeholder, the body, then patches the length.
    fn section(&mut self, tag: u32, body: impl FnOnce(&mut Writer)) {
        self.u32(tag);
        let at = self.buf.len();
        self.u32(0);
        body(self);
        let len = len32(self.buf.len() - at - 4);
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ArtifactError> {
        let left = self.buf.len() - self.at;
        if n > left {
            return Err(ArtifactError::Truncated { what, offset: self.at, needed: n, left });
        }
        let out = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, ArtifactError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, ArtifactError> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, ArtifactError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, ArtifactError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
    /// A count of items each at least `min_item` bytes long, checked against what is
    /// left so a corrupt count cannot make the decoder loop or allocate for long.
    fn count(&mut self, what: &'static str, min_item: usize) -> Result<u32, ArtifactError> {
        let n = self.u32(what)?;
        let left = self.buf.len() - self.at;
        if (n as usize).saturating_mul(min_item) > left {
            return Err(ArtifactError::Malformed(format!("{what} {n} exceeds the section")));
        }
        Ok(n)
    }
    fn str(&mut self, what: &'static str) -> Result<String, ArtifactError> {
        let len = self.u32(what)? as usize;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| ArtifactError::Malformed(format!("{what} is not UTF-8")))
    }
    fn ip(&mut self) -> Result<IpAddr, ArtifactError> {
        match self.u8("address family")? {
            datapath::FAMILY_IPV4 => {
                let b: [u8; 4] = self.take(4, "IPv4 address")?.try_into().expect("4 bytes");
                Ok(IpAddr::V4(Ipv4Addr::from(b)))
            }
            datapath::FAMILY_IPV6 => {
                let b: [u8; 16] = self.take(16, "IPv6 address")?.try_into().expect("16 bytes");
                Ok(IpAddr::V6(Ipv6Addr::from(b)))
            }
            other => Err(ArtifactError::Malformed(format!("address family {other}"))),
        }
    }
    /// The body of the next section, which must carry `tag`.
    fn section(&mut self, tag: u32, what: &'static str) -> Result<Reader<'a>, ArtifactError> {
        let found = self.u32(what)?;
        if found != tag {
            return Err(ArtifactError::Malformed(format!(
                "expected section {tag} ({what}), found {found}"
            )));
        }
        let len = self.u32(what)? as usize;
        Ok(Reader { buf: self.take(len, what)?, at: 0 })
    }
    fn finish(&self, what: &'static str) -> Result<(), ArtifactError> {
        if self.at != self.buf.len() {
            return Err(ArtifactError::Malformed(format!(
                "{} trailing bytes after {what}",
                self.buf.len() - self.at
            )));
        }
        Ok(())
    }
}
