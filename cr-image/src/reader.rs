//! The record stream: record headers, payloads, padding and page data, read
//! front to back from any `Read`, with the byte offset, the record index and
//! the running CRC-32 of every byte read. It knows nothing of what records
//! mean; `parser` and `verify` do.

use std::io::{self, BufRead, BufReader, Read};

use crc::{Crc, Digest, Table, CRC_32_ISO_HDLC};

use crate::format::{padding, RecordType, RECORD_HEADER_LEN};
use crate::{At, ImageError};

/// The image checksum: zlib's CRC-32 (IEEE 802.3), table-driven 16 bytes at
/// a time because it runs over every page.
static CRC32: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISO_HDLC);

/// A record header, with where it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    /// Index of the record, from 0.
    pub index: u64,
    /// Offset of the record header.
    pub offset: u64,
    /// The type field.
    pub raw_type: u32,
    /// The length field.
    pub len: u32,
    /// CRC-32 of every byte before this record header.
    pub crc_before: u32,
}

impl Head {
    /// Offset of the payload.
    pub fn payload(&self) -> u64 {
        self.offset + u64::from(RECORD_HEADER_LEN)
    }
}

/// Reads records from `R` and accounts for every byte.
pub(crate) struct RecordReader<R> {
    input: BufReader<R>,
    offset: u64,
    /// Record headers read so far.
    records: u64,
    /// Type of the current record, once known (for error positions).
    kind: Option<RecordType>,
    crc: Digest<'static, u32, Table<16>>,
}

impl<R: Read> RecordReader<R> {
    pub fn new(input: R) -> Self {
        RecordReader {
            input: BufReader::with_capacity(64 << 10, input),
            offset: 0,
            records: 0,
            kind: None,
            crc: CRC32.digest(),
        }
    }

    /// The current position: the current record and the next byte.
    pub fn at(&self) -> At {
        At {
            record: self.records.saturating_sub(1),
            kind: self.kind,
            offset: self.offset,
        }
    }

    /// A position `offset` in the current record.
    pub fn at_record(&self, offset: u64) -> At {
        At {
            offset,
            ..self.at()
        }
    }

    /// The position of the next record, which has not been read yet.
    pub fn next_at(&self) -> At {
        At {
            record: self.records,
            kind: None,
            offset: self.offset,
        }
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Sets the type of the current record, for the positions of errors.
    pub fn set_kind(&mut self, kind: RecordType) {
        self.kind = Some(kind);
    }

    /// The next record header; `None` if the stream ends cleanly before it.
    pub fn read_head(&mut self) -> Result<Option<Head>, ImageError> {
        let crc_before = self.crc.clone().finalize();
        let at = self.next_at();
        let mut buf = [0u8; RECORD_HEADER_LEN as usize];
        let got = self.fill(&mut buf)?;
        if got == 0 {
            return Ok(None);
        }
        self.records += 1;
        self.kind = None;
        if got < buf.len() {
            return Err(ImageError::Truncated {
                at: self.at(),
                what: "inside a record header",
            });
        }
        let [t0, t1, t2, t3, l0, l1, l2, l3] = buf;
        Ok(Some(Head {
            index: at.record,
            offset: at.offset,
            raw_type: u32::from_le_bytes([t0, t1, t2, t3]),
            len: u32::from_le_bytes([l0, l1, l2, l3]),
            crc_before,
        }))
    }

    /// Fills `buf`; the stream must not end first (`what` says where we are).
    pub fn read_exact(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), ImageError> {
        if self.fill(buf)? < buf.len() {
            return Err(ImageError::Truncated {
                at: self.at(),
                what,
            });
        }
        Ok(())
    }

    /// Reads `len` bytes of payload. The buffer grows with the data that
    /// actually arrives, so a length field alone never allocates.
    pub fn read_payload(&mut self, len: u32, what: &'static str) -> Result<Vec<u8>, ImageError> {
        let mut buf = Vec::new();
        let result = (&mut self.input).take(u64::from(len)).read_to_end(&mut buf);
        self.account(&buf);
        if let Err(source) = result {
            return Err(ImageError::Io {
                at: self.at(),
                source,
            });
        }
        if buf.len() < len as usize {
            return Err(ImageError::Truncated {
                at: self.at(),
                what,
            });
        }
        Ok(buf)
    }

    /// Reads and checksums `n` bytes without keeping them (page data).
    pub fn skip(&mut self, mut n: u64, what: &'static str) -> Result<(), ImageError> {
        let mut buf = [0u8; 16 << 10];
        while n > 0 {
            let chunk = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            let part = &mut buf[..chunk];
            self.read_exact(part, what)?;
            n -= chunk as u64;
        }
        Ok(())
    }

    /// Reads the padding after a payload of `len` bytes; it must be zero.
    pub fn read_padding(&mut self, len: u32) -> Result<(), ImageError> {
        let mut pad = [0u8; 8];
        let pad = &mut pad[..padding(len) as usize];
        let start = self.at();
        self.read_exact(pad, "inside the padding")?;
        match pad.iter().position(|&b| b != 0) {
            None => Ok(()),
            Some(i) => Err(ImageError::Padding {
                at: At {
                    offset: start.offset + i as u64,
                    ..start
                },
                value: pad[i],
            }),
        }
    }

    /// Whether the stream has ended (nothing is consumed).
    pub fn at_end(&mut self) -> Result<bool, ImageError> {
        loop {
            match self.input.fill_buf() {
                Ok(buf) => return Ok(buf.is_empty()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ImageError::Io {
                        at: self.at(),
                        source,
                    })
                }
            }
        }
    }

    /// Reads until `buf` is full or the stream ends; returns the bytes read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, ImageError> {
        let mut got = 0;
        let mut failure = None;
        while let Some(rest) = buf.get_mut(got..).filter(|r| !r.is_empty()) {
            match self.input.read(rest) {
                Ok(0) => break,
                // A reader that claims more than it was given is not believed.
                Ok(n) => got += n.min(rest.len()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        self.account(&buf[..got]);
        match failure {
            None => Ok(got),
            Some(source) => Err(ImageError::Io {
                at: self.at(),
                source,
            }),
        }
    }

    fn account(&mut self, bytes: &[u8]) {
        self.crc.update(bytes);
        self.offset = self.offset.saturating_add(bytes.len() as u64);
    }
}
