//! Checks that a `--kernel` file is a Linux kernel an engine can boot, so a
//! wrong file is refused with a reason instead of a hung or crashed guest.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The kinds of kernel images crvmm boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// An uncompressed ELF `vmlinux` with a PVH entry note.
    ElfPvh,
    /// A `bzImage` (x86 boot protocol).
    BzImage,
}

/// Why a file is not a bootable kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The file cannot be opened or read.
    #[error("cannot read kernel {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Neither ELF nor bzImage.
    #[error("{path} is not a Linux kernel: neither an ELF vmlinux nor a bzImage")]
    NotAKernel {
        /// The file.
        path: PathBuf,
    },
    /// An ELF file that is not a 64-bit x86 executable, or is cut short.
    #[error("{path} is not a usable x86-64 vmlinux: {reason}")]
    BadElf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A vmlinux without the PVH note the engines need to enter it.
    #[error(
        "{path} has no PVH entry note (build the kernel with CONFIG_PVH=y, or boot its bzImage)"
    )]
    NoPvhNote {
        /// The file.
        path: PathBuf,
    },
}

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const BZIMAGE_MAGIC_OFFSET: u64 = 0x202;
const BZIMAGE_MAGIC: &[u8; 4] = b"HdrS";
const PT_NOTE: u32 = 4;
/// `XEN_ELFNOTE_PHYS32_ENTRY`: the PVH 32-bit entry point.
const NOTE_PHYS32_ENTRY: u32 = 18;
/// Cap on program headers read, far above any real kernel.
const MAX_PHDRS: u16 = 64;

/// Identifies the kernel format of `path`, or says why it cannot be booted.
pub fn probe(path: &Path) -> Result<KernelFormat, KernelError> {
    let read_err = |source| KernelError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut magic = [0u8; 4];
    if read_full(&mut file, &mut magic).map_err(read_err)? < 4 {
        return Err(KernelError::NotAKernel { path: path.into() });
    }
    if &magic == ELF_MAGIC {
        return check_elf(&mut file, path);
    }
    file.seek(SeekFrom::Start(BZIMAGE_MAGIC_OFFSET))
        .map_err(read_err)?;
    let mut hdr = [0u8; 4];
    if read_full(&mut file, &mut hdr).map_err(read_err)? == 4 && &hdr == BZIMAGE_MAGIC {
        return Ok(KernelFormat::BzImage);
    }
    Err(KernelError::NotAKernel { path: path.into() })
}

fn check_elf<R: Read + Seek>(file: &mut R, path: &Path) -> Result<KernelFormat, KernelError> {
    let bad = |reason: &str| KernelError::BadElf {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let mut ehdr = [0u8; 64];
    file.seek(SeekFrom::Start(0))
        .map_err(|_| bad("cannot seek"))?;
    if read_full(file, &mut ehdr).map_err(|_| bad("cannot read the ELF header"))? < 64 {
        return Err(bad("truncated ELF header"));
    }
    if ehdr[4] != 2 || ehdr[5] != 1 {
        return Err(bad("not a 64-bit little-endian ELF file"));
    }
    if u16::from_le_bytes([ehdr[18], ehdr[19]]) != 62 {
        return Err(bad("not built for x86-64"));
    }
    let phoff = u64::from_le_bytes(ehdr[32..40].try_into().unwrap());
    let phentsize = u16::from_le_bytes([ehdr[54], ehdr[55]]);
    let phnum = u16::from_le_bytes([ehdr[56], ehdr[57]]);
    if phentsize != 56 || phnum == 0 || phnum > MAX_PHDRS {
        return Err(bad("implausible program header table"));
    }
    for i in 0..u64::from(phnum) {
        let mut ph = [0u8; 56];
        file.seek(SeekFrom::Start(phoff + i * 56))
            .map_err(|_| bad("cannot seek to a program header"))?;
        if read_full(file, &mut ph).map_err(|_| bad("cannot read a program header"))? < 56 {
            return Err(bad("truncated program header table"));
        }
        if u32::from_le_bytes(ph[0..4].try_into().unwrap()) != PT_NOTE {
            continue;
        }
        let offset = u64::from_le_bytes(ph[8..16].try_into().unwrap());
        let size = u64::from_le_bytes(ph[32..40].try_into().unwrap());
        if size > 1 << 20 {
            return Err(bad("oversized note segment"));
        }
        let mut notes = vec![0u8; size as usize];
        file.seek(SeekFrom::Start(offset))
            .map_err(|_| bad("cannot seek to notes"))?;
        if read_full(file, &mut notes).map_err(|_| bad("cannot read notes"))? < notes.len() {
            return Err(bad("truncated note segment"));
        }
        if has_pvh_note(&notes) {
            return Ok(KernelFormat::ElfPvh);
        }
    }
    Err(KernelError::NoPvhNote { path: path.into() })
}

/// Walks ELF notes (`namesz, descsz, type, name, desc`, 4-byte aligned).
fn has_pvh_note(mut notes: &[u8]) -> bool {
    let align = |n: usize| (n + 3) & !3;
    while notes.len() >= 12 {
        let word = |i: usize| u32::from_le_bytes(notes[i..i + 4].try_into().unwrap()) as usize;
        let (namesz, descsz, kind) = (word(0), word(4), word(8) as u32);
        let name_end = 12 + align(namesz);
        let Some(next) = name_end.checked_add(align(descsz)) else {
            return false;
        };
        if next > notes.len() {
            return false;
        }
        if kind == NOTE_PHYS32_ENTRY && notes[12..12 + namesz].starts_with(b"Xen") {
            return true;
        }
        notes = &notes[next..];
    }
    false
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    /// A minimal ELF64 x86-64 header with one PT_NOTE holding `note`.
    fn elf_with_note(note_type: u32) -> Vec<u8> {
        let mut elf = vec![0u8; 64 + 56];
        elf[..4].copy_from_slice(ELF_MAGIC);
        elf[4] = 2;
        elf[5] = 1;
        elf[18..20].copy_from_slice(&62u16.to_le_bytes());
        elf[32..40].copy_from_slice(&64u64.to_le_bytes());
        elf[54..56].copy_from_slice(&56u16.to_le_bytes());
        elf[56..58].copy_from_slice(&1u16.to_le_bytes());
        let mut note = Vec::new();
        note.extend(4u32.to_le_bytes());
        note.extend(4u32.to_le_bytes());
        note.extend(note_type.to_le_bytes());
        note.extend(b"Xen\0");
        note.extend(0x100_0000u32.to_le_bytes());
        let ph = &mut elf[64..];
        ph[0..4].copy_from_slice(&PT_NOTE.to_le_bytes());
        ph[8..16].copy_from_slice(&120u64.to_le_bytes());
        ph[32..40].copy_from_slice(&(note.len() as u64).to_le_bytes());
        elf.extend(note);
        elf
    }

    #[test]
    fn recognises_pvh_elf() {
        let f = file_with(&elf_with_note(NOTE_PHYS32_ENTRY));
        assert_eq!(probe(f.path()).unwrap(), KernelFormat::ElfPvh);
    }

    #[test]
    fn elf_without_pvh_note_is_refused() {
        let f = file_with(&elf_with_note(1));
        assert!(matches!(
            probe(f.path()),
            Err(KernelError::NoPvhNote { .. })
        ));
    }

    #[test]
    fn truncated_elf_is_refused() {
        let elf = elf_with_note(NOTE_PHYS32_ENTRY);
        let f = file_with(&elf[..100]);
        let err = probe(f.path()).unwrap_err();
        assert!(
            err.to_string().contains("truncated program header"),
            "{err}"
        );
    }

    #[test]
    fn recognises_bzimage() {
        let mut img = vec![0u8; 0x400];
        img[0x202..0x206].copy_from_slice(BZIMAGE_MAGIC);
        let f = file_with(&img);
        assert_eq!(probe(f.path()).unwrap(), KernelFormat::BzImage);
    }

    #[test]
    fn text_file_is_not_a_kernel() {
        let f = file_with(b"#!/bin/sh\necho hello\n");
        assert!(matches!(
            probe(f.path()),
            Err(KernelError::NotAKernel { .. })
        ));
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = probe(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vmlinux"));
    }
}
