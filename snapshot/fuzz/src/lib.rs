//! What the `state_file` fuzz target decodes, and the seed files it starts
//! from. The state type is shaped like crvmm's real snapshot state
//! (`VmmSnapshot`) without depending on the VMM: nested structs, vectors of
//! structs, byte and integer vectors, options, enums of every kind, strings,
//! and fixed-size blobs that decode like kvm-bindings' structures (a CBOR
//! byte string, zero-padded when short, truncated when long, or an array of
//! bytes).

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The cap the target reads with: small, so the fuzzer reaches the
/// payload quickly and the allocation budget stays tight.
pub const CAP: u64 = 16 << 10;

/// The whole state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Who wrote it.
    pub version: String,
    /// Guest memory in bytes.
    pub mem_size: u64,
    /// Flags.
    pub flags: Flags,
    /// One per vCPU.
    pub vcpus: Vec<Vcpu>,
    /// Interrupt controllers, as raw blobs.
    pub chips: [Raw<64>; 2],
    /// Devices.
    pub devices: Vec<Device>,
    /// A free-form note.
    pub note: Option<String>,
    /// A field added in a later minor version.
    #[serde(default)]
    pub added_later: Option<Vec<u64>>,
}

/// Booleans and small numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flags {
    /// Like `nested_pvm`.
    pub nested: bool,
    /// Like `debug_port`.
    pub debug_port: bool,
    /// A signed number.
    pub skew: i64,
    /// A float.
    pub ratio: f64,
}

/// One vCPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vcpu {
    /// Its index.
    pub index: u8,
    /// Like CPUID entries.
    pub cpuid: Vec<Raw<40>>,
    /// Index and value pairs.
    pub msrs: Vec<(u32, u64)>,
    /// General registers.
    pub regs: Vec<u64>,
    /// Like `kvm_xsave`, but smaller.
    pub xsave: Raw<256>,
    /// A plain byte vector (a CBOR array of integers).
    pub lapic: Vec<u8>,
    /// Run state.
    pub mode: Mode,
    /// Like `tsc_khz`.
    pub tsc_khz: Option<u32>,
}

/// Unit, newtype, tuple and struct variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Unit.
    Runnable,
    /// Unit.
    Halted,
    /// Struct.
    WaitSipi {
        /// APIC id.
        apic_id: u32,
    },
    /// Tuple.
    Custom(u16, i32),
}

/// A device's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Device {
    /// Struct variant with a fixed array and a vector.
    Serial {
        /// Registers.
        regs: [u8; 9],
        /// Queued input.
        input: Vec<u8>,
    },
    /// Tuple variant with an option.
    Keyboard(Option<u8>, Vec<u8>),
    /// Nested vector of structs.
    Virtio {
        /// Driver features.
        features: u64,
        /// Queues.
        queues: Vec<Queue>,
    },
    /// Newtype variant.
    Unknown(String),
}

/// A virtio queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queue {
    /// Size.
    pub size: u16,
    /// Ready.
    pub ready: bool,
    /// Descriptor table, available and used rings.
    pub addrs: [u64; 3],
    /// Next available and used indexes.
    pub next: (u16, u16),
}

/// A fixed-size blob encoded the way kvm-bindings encodes KVM structures.
#[derive(Debug, Clone, PartialEq)]
pub struct Raw<const N: usize>(pub [u8; N]);

impl<const N: usize> Serialize for Raw<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de, const N: usize> Deserialize<'de> for Raw<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RawVisitor<const N: usize>;
        impl<'de, const N: usize> Visitor<'de> for RawVisitor<N> {
            type Value = Raw<N>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "up to {N} bytes")
            }
            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Raw<N>, E> {
                let mut out = [0u8; N];
                let n = bytes.len().min(N);
                out[..n].copy_from_slice(&bytes[..n]);
                Ok(Raw(out))
            }
            // As kvm-bindings does: stop after N elements, leave the rest.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw<N>, A::Error> {
                let mut out = [0u8; N];
                for byte in &mut out {
                    match seq.next_element()? {
                        Some(b) => *byte = b,
                        None => break,
                    }
                }
                Ok(Raw(out))
            }
        }
        d.deserialize_bytes(RawVisitor::<N>)
    }
}

fn raw<const N: usize>(seed: u8) -> Raw<N> {
    Raw(std::array::from_fn(|i| (i as u8).wrapping_mul(seed)))
}

fn vcpu(index: u8, mode: Mode) -> Vcpu {
    Vcpu {
        index,
        cpuid: (0..3).map(|i| raw(i + 1)).collect(),
        msrs: vec![(0x10, u64::MAX), (0xc000_0080, 0xd01)],
        regs: vec![0, 1, 0x10_0000, u64::MAX - 1],
        xsave: raw(index + 7),
        lapic: (0..32).collect(),
        mode,
        tsc_khz: if index == 0 { Some(2_400_000) } else { None },
    }
}

/// A fully populated state.
pub fn machine() -> Machine {
    Machine {
        version: "0.1.0".into(),
        mem_size: 256 << 20,
        flags: Flags {
            nested: true,
            debug_port: false,
            skew: -12345,
            ratio: 1.5,
        },
        vcpus: vec![
            vcpu(0, Mode::Runnable),
            vcpu(1, Mode::WaitSipi { apic_id: 1 }),
            vcpu(2, Mode::Custom(7, -3)),
        ],
        chips: [raw(3), raw(5)],
        devices: vec![
            Device::Serial {
                regs: [0, 0, 1, 0, 3, 0x60, 0, 0, 0],
                input: b"ls\n".to_vec(),
            },
            Device::Keyboard(Some(0x60), vec![0xfa]),
            Device::Virtio {
                features: 1 << 32,
                queues: (0..3)
                    .map(|i| Queue {
                        size: 256,
                        ready: i != 2,
                        addrs: [0x1000 * i, 0x2000 * i, 0x3000 * i],
                        next: (i as u16, 0),
                    })
                    .collect(),
            },
            Device::Unknown("rtc".into()),
        ],
        note: Some("seed".into()),
        added_later: Some(vec![1, 2, 3]),
    }
}

/// The smallest state: empty vectors, no options.
pub fn minimal() -> Machine {
    Machine {
        version: String::new(),
        mem_size: 0,
        flags: Flags {
            nested: false,
            debug_port: true,
            skew: 0,
            ratio: 0.0,
        },
        vcpus: vec![vcpu(0, Mode::Halted)],
        chips: [raw(0), raw(1)],
        devices: Vec::new(),
        note: None,
        added_later: None,
    }
}

/// A generic CBOR document with what `Machine` never holds: tags, maps
/// with non-text keys, negative and big integers, half floats, nesting.
pub fn generic() -> ciborium::Value {
    use ciborium::Value as V;
    V::Map(vec![
        (
            V::Integer(1.into()),
            V::Tag(2, Box::new(V::Bytes(vec![1; 12]))),
        ),
        (V::Integer((-7).into()), V::Float(0.5)),
        (
            V::Bytes(vec![0xff]),
            V::Array(vec![V::Null, V::Bool(true), V::Text("é".into())]),
        ),
        (
            V::Text("nested".into()),
            V::Array(vec![V::Array(vec![V::Map(vec![(V::Null, V::Null)])])]),
        ),
        (
            V::Tag(0, Box::new(V::Text("t".into()))),
            V::Integer(u64::MAX.into()),
        ),
    ])
}

/// `bytes` with its last 8 bytes replaced by the CRC64 of the rest (when it
/// is at least a header and a checksum long), so that a reader gets past
/// the checksum to the payload.
pub fn reseal(bytes: &[u8]) -> Option<Vec<u8>> {
    const CRC64: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_ECMA_182);
    let body = bytes.len().checked_sub(8).filter(|&n| n >= 24)?;
    let mut out = bytes[..body].to_vec();
    out.extend_from_slice(&CRC64.checksum(&out).to_le_bytes());
    Some(out)
}

/// A valid container whose payload declares a CBOR array of 2^40 `regs`:
/// the decoder must fail on the missing items without allocating for them.
fn huge_declared_length() -> Vec<u8> {
    let file = crvmm_snapshot::encode(&machine());
    let payload = &file[24..file.len() - 8];
    let at = payload
        .windows(6)
        .position(|w| w == b"\x64regs\x84")
        .expect("regs is a 4-element array")
        + 5;
    let mut patched = payload[..at].to_vec();
    patched.push(0x9b); // array, 8-byte length follows
    patched.extend_from_slice(&(1u64 << 40).to_be_bytes());
    patched.extend_from_slice(&payload[at + 1..]);
    let mut out = file[..16].to_vec();
    out.extend_from_slice(&(patched.len() as u64).to_le_bytes());
    out.extend_from_slice(&patched);
    out.extend_from_slice(&[0; 8]);
    reseal(&out).expect("long enough")
}

/// Seed files: valid state files, then broken variants of one (truncated
/// in each part, a flipped payload byte, a wrong version, flags, length,
/// a CBOR array declaring far more items than the file holds).
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let full = crvmm_snapshot::encode(&machine());
    let mut out = vec![
        ("valid-full".to_owned(), full.clone()),
        ("valid-minimal".into(), crvmm_snapshot::encode(&minimal())),
        ("valid-generic".into(), crvmm_snapshot::encode(&generic())),
        (
            "valid-wrong-type".into(),
            crvmm_snapshot::encode(&vec![1u8, 2, 3]),
        ),
    ];
    out.push(("truncated-header".into(), full[..12].to_vec()));
    out.push(("truncated-payload".into(), full[..full.len() / 2].to_vec()));
    out.push(("truncated-checksum".into(), full[..full.len() - 3].to_vec()));
    let mut flipped = full.clone();
    flipped[40] ^= 0x04;
    out.push(("flipped-payload".into(), flipped));
    let mut version = full.clone();
    version[8] = 2;
    out.push(("wrong-version".into(), version));
    let mut flags = full.clone();
    flags[12] = 1;
    out.push(("unknown-flags".into(), flags));
    let mut len = full.clone();
    len[16..24].copy_from_slice(&(CAP + 1).to_le_bytes());
    out.push(("too-large".into(), len));
    out.push(("huge-declared-length".into(), huge_declared_length()));
    let mut trailing = full;
    trailing.extend_from_slice(b"xx");
    out.push(("trailing".into(), trailing));
    out
}
