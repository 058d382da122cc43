//! Decoding and encoding of the fixed-size structures: the little-endian
//! cursor [`Le`], the [`Wire`] trait, and the [`Named`] fields errors
//! point at.

use std::mem::size_of;

/// A little-endian cursor over a payload. Reading past the end yields
/// zeros instead of panicking; callers check lengths before decoding.
pub struct Le<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Le<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Le { bytes, pos: 0 }
    }

    /// The next `N` bytes.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let end = self.pos.saturating_add(N);
        let out = self
            .bytes
            .get(self.pos..end)
            .and_then(|b| <[u8; N]>::try_from(b).ok())
            .unwrap_or([0; N]);
        self.pos = end;
        out
    }

    /// The next u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    /// The next i32.
    pub fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.array())
    }

    /// The next u64.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// The next i64.
    pub fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.array())
    }
}

/// A fixed-size structure of the image.
pub trait Wire: Sized {
    /// Its size in the image.
    const SIZE: usize = size_of::<Self>();

    /// Reads it from the cursor.
    fn decode(r: &mut Le<'_>) -> Self;

    /// Decodes it from the start of `bytes` (zeros for missing bytes).
    fn from_bytes(bytes: &[u8]) -> Self {
        Self::decode(&mut Le::new(bytes))
    }

    /// Appends it to `out`.
    #[cfg(any(test, feature = "builder"))]
    fn encode(&self, out: &mut Vec<u8>);
}

#[cfg(any(test, feature = "builder"))]
pub(super) fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
}

/// A field of a structure: its name, its offset in the structure, its value.
/// (`named!(Thread, t.restart.kind)` names a field of a nested structure.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Named {
    /// The field's name in the uapi header.
    pub name: &'static str,
    /// Its offset in the record payload.
    pub offset: usize,
    /// Its value.
    pub value: u64,
}

macro_rules! named {
    ($ty:ty, $self:ident . $($field:ident).+) => {
        Named {
            name: stringify!($($field).+),
            offset: std::mem::offset_of!($ty, $($field).+),
            value: u64::from($self.$($field).+),
        }
    };
}
pub(crate) use named;
