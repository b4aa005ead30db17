//! A small reader of the BTF type section, enough to compare struct layouts.
//!
//! aya-obj parses BTF too but does not expose struct members, so the layout tests read
//! `.BTF` themselves. The format is the kernel's (Documentation/bpf/btf.rst): a header,
//! then a run of types, each a 12-byte `btf_type` followed by trailing data whose length
//! depends on the kind, then a string table. Every kind's trailing length is handled,
//! even of kinds the tests never look at, because one wrong length would misread every
//! type after it; an unknown kind is an error rather than a guess.

use std::collections::BTreeMap;

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const TYPE_LEN: usize = 12;

/// BTF kinds (`BTF_KIND_*` in `include/uapi/linux/btf.h`).
pub mod kind {
    pub const INT: u8 = 1;
    pub const PTR: u8 = 2;
    pub const ARRAY: u8 = 3;
    pub const STRUCT: u8 = 4;
    pub const UNION: u8 = 5;
    pub const ENUM: u8 = 6;
    pub const FWD: u8 = 7;
    pub const TYPEDEF: u8 = 8;
    pub const VOLATILE: u8 = 9;
    pub const CONST: u8 = 10;
    pub const RESTRICT: u8 = 11;
    pub const FUNC: u8 = 12;
    pub const FUNC_PROTO: u8 = 13;
    pub const VAR: u8 = 14;
    pub const DATASEC: u8 = 15;
    pub const FLOAT: u8 = 16;
    pub const DECL_TAG: u8 = 17;
    pub const TYPE_TAG: u8 = 18;
    pub const ENUM64: u8 = 19;
}

/// One type of the section. Type ids start at 1; id 0 is `void` and is not stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Type {
    pub kind: u8,
    pub name: String,
    /// `size` for kinds that have one (INT, STRUCT, UNION, ENUM, DATASEC, FLOAT), the
    /// referenced type id for the others.
    pub size_or_type: u32,
    /// Members of a STRUCT or UNION, empty for other kinds.
    pub members: Vec<Member>,
    /// For an ARRAY: the element type id and the number of elements.
    pub array: Option<(u32, u32)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub type_id: u32,
    pub bit_offset: u32,
    /// Non-zero for a bitfield member.
    pub bitfield_size: u32,
}

#[derive(Clone, Debug)]
pub struct Btf {
    /// `types[i]` has type id `i + 1`.
    types: Vec<Type>,
}

impl Btf {
    /// Parses a `.BTF` section. Either byte order is accepted, as the magic says.
    pub fn parse(data: &[u8]) -> Result<Btf, String> {
        let big_endian = match data.get(..2) {
            Some(m) if u16::from_le_bytes([m[0], m[1]]) == MAGIC => false,
            Some(m) if u16::from_be_bytes([m[0], m[1]]) == MAGIC => true,
            _ => return Err("no BTF magic at the start of the section".to_owned()),
        };
        let r = Reader { data, big_endian };

        let hdr_len = r.u32(4)? as usize;
        if hdr_len < HEADER_LEN {
            return Err(format!("header length {hdr_len} is shorter than {HEADER_LEN}"));
        }
        let type_off = hdr_len + r.u32(8)? as usize;
        let type_len = r.u32(12)? as usize;
        let str_off = hdr_len + r.u32(16)? as usize;
        let str_len = r.u32(20)? as usize;
        let strings = data
            .get(str_off..str_off + str_len)
            .ok_or_else(|| "string table runs past the end of the section".to_owned())?;
        let type_end = type_off + type_len;
        if type_end > data.len() {
            return Err("type table runs past the end of the section".to_owned());
        }

        let mut types = Vec::new();
        let mut at = type_off;
        while at < type_end {
            let (ty, len) = r.read_type(at, strings)?;
            types.push(ty);
            at += len;
        }
        if at != type_end {
            return Err(format!("last type ends at {at}, past the type table end {type_end}"));
        }
        Ok(Btf { types })
    }

    /// The type with this id, or `None` for `void` (0) and unknown ids.
    pub fn get(&self, id: u32) -> Option<&Type> {
        self.types.get((id as usize).checked_sub(1)?)
    }

    pub fn types(&self) -> &[Type] {
        &self.types
    }

    /// Every struct with this name (a single compilation unit has at most one).
    pub fn structs_named(&self, name: &str) -> Vec<&Type> {
        self.types.iter().filter(|t| t.kind == kind::STRUCT && t.name == name).collect()
    }

    /// How many bytes an object of type `id` takes, following typedefs and qualifiers.
    pub fn size_of(&self, id: u32) -> Result<u64, String> {
        // Qualifier and typedef chains are short; the bound only guards against a cycle
        // in a corrupt section.
        let mut id = id;
        for _ in 0..64 {
            let ty = self.get(id).ok_or_else(|| format!("type id {id} does not exist"))?;
            match ty.kind {
                kind::INT
                | kind::STRUCT
                | kind::UNION
                | kind::ENUM
                | kind::ENUM64
                | kind::FLOAT
                | kind::DATASEC => return Ok(u64::from(ty.size_or_type)),
                kind::PTR => return Ok(8),
                kind::ARRAY => {
                    let (elem, nelems) = ty.array.expect("arrays are read with their data");
                    return Ok(self.size_of(elem)? * u64::from(nelems));
                }
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    id = ty.size_or_type
                }
                other => return Err(format!("type id {id} of kind {other} has no size")),
            }
        }
        Err(format!("type id {id} is in a cycle of typedefs or qualifiers"))
    }
}

struct Reader<'a> {
    data: &'a [u8],
    big_endian: bool,
}

impl Reader<'_> {
    fn u32(&self, at: usize) -> Result<u32, String> {
        let bytes: [u8; 4] =
            self.data.get(at..at + 4).and_then(|b| b.try_into().ok()).ok_or_else(|| {
                format!("read of 4 bytes at {at} runs past the end of the section")
            })?;
        Ok(if self.big_endian { u32::from_be_bytes(bytes) } else { u32::from_le_bytes(bytes) })
    }

    /// Reads the type at `at` and returns it with its length, trailing data included.
    fn read_type(&self, at: usize, strings: &[u8]) -> Result<(Type, usize), String> {
        let name = string_at(strings, self.u32(at)?)?;
        let info = self.u32(at + 4)?;
        let size_or_type = self.u32(at + 8)?;
        let vlen = (info & 0xffff) as usize;
        let kind = ((info >> 24) & 0x1f) as u8;
        let kind_flag = info >> 31 == 1;
        let data = at + TYPE_LEN;

        let mut ty = Type { kind, name, size_or_type, members: Vec::new(), array: None };
        let trailing = match kind {
            kind::PTR
            | kind::FWD
            | kind::TYPEDEF
            | kind::VOLATILE
            | kind::CONST
            | kind::RESTRICT
            | kind::FUNC
            | kind::FLOAT
            | kind::TYPE_TAG => 0,
            // INT: one u32 of encoding, bit offset and bit width.
            // VAR: one u32 of linkage. DECL_TAG: one i32 component index.
            kind::INT | kind::VAR | kind::DECL_TAG => 4,
            // struct btf_array: element type, index type, number of elements.
            kind::ARRAY => {
                ty.array = Some((self.u32(data)?, self.u32(data + 8)?));
                12
            }
            // struct btf_member: name, type, offset (bits, or bitfield size << 24 | offset
            // when kind_flag is set).
            kind::STRUCT | kind::UNION => {
                for i in 0..vlen {
                    let m = data + i * 12;
                    let offset = self.u32(m + 8)?;
                    let (bit_offset, bitfield_size) =
                        if kind_flag { (offset & 0xff_ffff, offset >> 24) } else { (offset, 0) };
                    ty.members.push(Member {
                        name: string_at(strings, self.u32(m)?)?,
                        type_id: self.u32(m + 4)?,
                        bit_offset,
                        bitfield_size,
                    });
                }
                vlen * 12
            }
            // struct btf_enum (name, i32 value) and struct btf_param (name, type).
            kind::ENUM | kind::FUNC_PROTO => vlen * 8,
            // struct btf_var_secinfo (type, offset, size) and struct btf_enum64 (name,
            // low 32 bits, high 32 bits).
            kind::DATASEC | kind::ENUM64 => vlen * 12,
            other => return Err(format!("type at byte {at} has unknown kind {other}")),
        };
        Ok((ty, TYPE_LEN + trailing))
    }
}

fn string_at(strings: &[u8], offset: u32) -> Result<String, String> {
    let rest = strings
        .get(offset as usize..)
        .ok_or_else(|| format!("string offset {offset} is past the string table"))?;
    let end = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| format!("string at offset {offset} has no terminating NUL"))?;
    String::from_utf8(rest[..end].to_vec())
        .map_err(|_| format!("string at offset {offset} is not UTF-8"))
}

/// Builds BTF sections by hand, to test the reader on kinds clang did not emit.
#[derive(Debug, Default)]
pub struct Builder {
    types: Vec<u8>,
    strings: Vec<u8>,
    names: BTreeMap<String, u32>,
}

impl Builder {
    pub fn new() -> Self {
        // Offset 0 of the string table is the empty name.
        Builder { strings: vec![0], ..Builder::default() }
    }

    fn name(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        if let Some(&offset) = self.names.get(name) {
            return offset;
        }
        let offset = u32::try_from(self.strings.len()).expect("small string table");
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        self.names.insert(name.to_owned(), offset);
        offset
    }

    /// Appends a type: its name, kind, vlen, kind_flag, size or type, then `trailing`
    /// as little-endian u32 words.
    pub fn push(
        &mut self,
        name: &str,
        kind: u8,
        vlen: u16,
        kind_flag: bool,
        size_or_type: u32,
        trailing: &[u32],
    ) {
        let name = self.name(name);
        let info = u32::from(vlen) | (u32::from(kind) << 24) | (u32::from(kind_flag) << 31);
        for word in [name, info, size_or_type].iter().chain(trailing) {
            self.types.extend_from_slice(&word.to_le_bytes());
        }
    }

    /// The offset a member or parameter name will have, for building trailing data.
    pub fn name_offset(&mut self, name: &str) -> u32 {
        self.name(name)
    }

    pub fn finish(&self) -> Vec<u8> {
        let type_len = u32::try_from(self.types.len()).expect("small type table");
        let str_len = u32::try_from(self.strings.len()).expect("small string table");
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]); // version 1, no flags
        for word in [HEADER_LEN as u32, 0, type_len, type_len, str_len] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One type of every kind, each with non-empty trailing data where the kind has any,
    /// then the struct the test looks for: misreading any length would misplace it.
    fn every_kind_then_a_struct() -> Vec<u8> {
        let mut b = Builder::new();
        let (a, c) = (b.name_offset("a"), b.name_offset("c"));
        b.push("u32", kind::INT, 0, false, 4, &[32]); // 1
        b.push("", kind::PTR, 0, false, 1, &[]); // 2
        b.push("", kind::ARRAY, 0, false, 0, &[1, 1, 3]); // 3: u32[3]
        b.push("e", kind::ENUM, 2, false, 4, &[a, 0, c, 1]); // 4
        b.push("f", kind::FWD, 0, false, 0, &[]); // 5
        b.push("t", kind::TYPEDEF, 0, false, 3, &[]); // 6: typedef u32 t[3]
        b.push("", kind::VOLATILE, 0, false, 1, &[]); // 7
        b.push("", kind::CONST, 0, false, 6, &[]); // 8
        b.push("", kind::RESTRICT, 0, false, 2, &[]); // 9
        b.push("", kind::FUNC_PROTO, 2, false, 1, &[a, 1, c, 2]); // 10
        b.push("fn", kind::FUNC, 0, false, 10, &[]); // 11
        b.push("v", kind::VAR, 0, false, 1, &[1]); // 12
        b.push(".maps", kind::DATASEC, 1, false, 4, &[12, 0, 4]); // 13
        b.push("float", kind::FLOAT, 0, false, 4, &[]); // 14
        b.push("tag", kind::DECL_TAG, 0, false, 11, &[0]); // 15
        b.push("ttag", kind::TYPE_TAG, 0, false, 1, &[]); // 16
        b.push("e64", kind::ENUM64, 2, false, 8, &[a, 1, 0, c, 2, 0]); // 17
        b.push("u", kind::UNION, 1, false, 4, &[a, 1, 0]); // 18
        // struct target { const t a; u32 c : 3; } with kind_flag, so c is a bitfield.
        b.push("target", kind::STRUCT, 2, true, 16, &[a, 8, 0, c, 1, (3 << 24) | 96]); // 19
        b.finish()
    }

    #[test]
    fn reads_a_struct_after_types_of_every_kind() {
        let btf = Btf::parse(&every_kind_then_a_struct()).unwrap();

        assert_eq!(btf.types().len(), 19);
        let target = btf.structs_named("target");
        assert_eq!(target.len(), 1);
        let members = &target[0].members;
        assert_eq!(
            members[0],
            Member { name: "a".into(), type_id: 8, bit_offset: 0, bitfield_size: 0 }
        );
        assert_eq!(
            members[1],
            Member { name: "c".into(), type_id: 1, bit_offset: 96, bitfield_size: 3 }
        );
        assert_eq!(btf.size_of(members[0].type_id), Ok(12));
    }

    #[test]
    fn rejects_an_unknown_kind() {
        let mut b = Builder::new();
        b.push("x", 31, 0, false, 0, &[]);

        let err = Btf::parse(&b.finish()).unwrap_err();
        assert!(err.contains("unknown kind 31"), "{err}");
    }

    #[test]
    fn rejects_trailing_data_cut_short() {
        let mut b = Builder::new();
        let a = b.name_offset("a");
        b.push("s", kind::STRUCT, 2, false, 8, &[a, 0, 0]); // says 2 members, has 1

        assert!(Btf::parse(&b.finish()).is_err());
    }

    #[test]
    fn rejects_a_section_without_magic() {
        assert!(Btf::parse(&[0; 32]).is_err());
    }
}
