use std::net::IpAddr;

use datapath::{IpcacheKey, PolicyKey, PolicyVerdict};
use sha2::{Digest, Sha256};

use super::*;

fn sample() -> Artifact {
    Artifact {
        source_digest: [7; 32],
        identities: vec![
            IdentityRecord { id: 257, labels: vec![("k8s:app".into(), "web".into())] },
            IdentityRecord { id: 2, labels: vec![("reserved:world".into(), String::new())] },
        ],
        endpoints: vec![EndpointRecord {
            name: "prod/web".into(),
            endpoint_id: 1,
            identity: 257,
            ingress_table: 1,
            egress_table: 0,
            addresses: vec!["10.0.0.1".parse::<IpAddr>().unwrap(), "fd00::1".parse().unwrap()],
        }],
        ipcache: vec![(
            IpcacheKey::new(4, [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 32),
            257,
        )],
        policy: vec![
            (
                PolicyKey { table: 1, identity: 258, proto: 6, port_bits: 16, port: 80 },
                PolicyVerdict { verdict: 1, pad: [0; 3], rule: 1 },
            ),
            (
                PolicyKey { table: 1, identity: 0, proto: 0, port_bits: 0, port: 0 },
                PolicyVerdict { verdict: 2, pad: [0; 3], rule: 2 },
            ),
        ],
        rules: vec![RuleRecord {
            cookie: 1,
            policy: "NetworkPolicy prod/web".into(),
            rule: "ingress[0]".into(),
            location: "web.yaml:10:7".into(),
        }],
        identity_labels: IdentityLabelRules {
            selected: vec!["app".into(), "pod-template-hash".into()],
            include: vec!["example.com/*".into()],
            exclude: vec!["version".into()],
        },
    }
}

/// Rewrites the trailing checksum so a test can reach the checks behind it.
fn reseal(bytes: &mut [u8]) {
    let len = bytes.len() - 32;
    let sum = Sha256::digest(&bytes[..len]);
    bytes[len..].copy_from_slice(&sum);
}

#[test]
fn round_trips_every_field() {
    let mut artifact = sample();
    let decoded = Artifact::decode(&artifact.encode()).unwrap();
    artifact.normalize();
    assert_eq!(decoded, artifact);
}

#[test]
fn list_order_does_not_change_the_bytes() {
    let a = sample();
    let mut b = sample();
    b.identities.reverse();
    b.policy.reverse();
    b.endpoints[0].addresses.reverse();
    assert_eq!(a.encode(), b.encode());
}

#[test]
fn identity_label_rules_count_selected_keys_then_the_filter() {
    let rules = sample().identity_labels;
    // Read by a selector: counts although the default filter drops it.
    assert!(rules.counts("pod-template-hash"));
    assert!(rules.counts("example.com/team"), "included by pattern");
    assert!(!rules.counts("version"), "excluded");
    assert!(rules.counts("tier"), "kept by the default filter");
    assert!(!rules.counts("controller-revision-hash"), "dropped by the default filter");
}

#[test]
fn rejects_an_unknown_identity_label_kind() {
    let artifact = Artifact {
        identity_labels: IdentityLabelRules { exclude: vec!["v".into()], ..Default::default() },
        ..Artifact::default()
    };
    let mut bytes = artifact.encode();
    // The last item: kind (1 byte), key length (4), key "v" (1), then the checksum.
    let kind = bytes.len() - 32 - 1 - 4 - 1;
    assert_eq!(bytes[kind], 2);
    bytes[kind] = 9;
    reseal(&mut bytes);
    let err = Artifact::decode(&bytes).unwrap_err();
    assert_eq!(err, ArtifactError::Malformed("identity label kind 9".into()));
}

#[test]
fn rejects_every_truncation_without_panicking() {
    let bytes = sample().encode();
    for len in 0..bytes.len() {
        assert!(Artifact::decode(&bytes[..len]).is_err(), "a prefix of {len} bytes decoded");
    }
}

#[test]
fn rejects_a_flipped_byte_as_corruption() {
    let bytes = sample().encode();
    for at in 60..bytes.len() {
        let mut corrupt = bytes.clone();
        corrupt[at] ^= 0x40;
        assert_eq!(Artifact::decode(&corrupt), Err(ArtifactError::ChecksumMismatch), "byte {at}");
    }
}

#[test]
fn rejects_bad_magic_version_and_abi() {
    let bytes = sample().encode();
    let mut wrong = bytes.clone();
    wrong[0] = b'X';
    assert_eq!(Artifact::decode(&wrong), Err(ArtifactError::BadMagic));

    let mut wrong = bytes.clone();
    wrong[8..10].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    reseal(&mut wrong);
    assert_eq!(
        Artifact::decode(&wrong),
        Err(ArtifactError::UnsupportedVersion {
            found: FORMAT_VERSION + 1,
            supported: FORMAT_VERSION
        })
    );

    let mut wrong = bytes.clone();
    wrong[12..20].copy_from_slice(&0xdead_beef_u64.to_le_bytes());
    reseal(&mut wrong);
    assert!(matches!(
        Artifact::decode(&wrong),
        Err(ArtifactError::AbiMismatch { found: 0xdead_beef, .. })
    ));
}

#[test]
fn rejects_a_huge_count_without_allocating_for_it() {
    let mut bytes = Artifact::default().encode();
    // The identities section starts after the header: tag, length, then the count.
    let count_at = 52 + 8;
    bytes[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    reseal(&mut bytes);
    assert!(matches!(Artifact::decode(&bytes), Err(ArtifactError::Malformed(_))));
}

#[test]
fn rejects_an_invalid_verdict() {
    let mut artifact = sample();
    artifact.policy[0].1.verdict = 9;
    assert!(matches!(Artifact::decode(&artifact.encode()), Err(ArtifactError::Malformed(_))));
}

#[test]
fn rejects_unknown_header_flags() {
    let mut bytes = sample().encode();
    bytes[10] = 1;
    reseal(&mut bytes);
    assert!(matches!(Artifact::decode(&bytes), Err(ArtifactError::Malformed(_))));
}
