//! Guest memory: anonymous mappings laid out by `arch::x86_64::layout`.

use crvmm_devices::GuestMemoryMmap;
use vm_memory::GuestAddress;

use crate::arch::x86_64::layout::ram_regions;

/// The smallest guest: room for the boot structures and a payload.
pub const MIN_MEM_SIZE: u64 = 2 << 20;

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The size is too small or not page-aligned.
    #[error("guest memory of {0} bytes: must be a multiple of 4 KiB and at least 2 MiB")]
    BadSize(u64),
    /// mmap failed.
    #[error("cannot map {0} bytes of guest memory")]
    Map(u64, #[source] vm_memory::mmap::FromRangesError),
}

/// Maps `size` bytes of anonymous guest memory.
pub fn create(size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    if size < MIN_MEM_SIZE || !size.is_multiple_of(4096) {
        return Err(MemoryError::BadSize(size));
    }
    let ranges: Vec<(GuestAddress, usize)> = ram_regions(size)
        .into_iter()
        .map(|(start, len)| (GuestAddress(start), len as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(|e| MemoryError::Map(size, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    #[test]
    fn creates_and_checks_sizes() {
        let m = create(16 << 20).unwrap();
        assert_eq!(m.num_regions(), 1);
        m.write_obj(0xdead_beefu32, GuestAddress(0x1000)).unwrap();
        assert!(matches!(create(1 << 20), Err(MemoryError::BadSize(_))));
        assert!(matches!(
            create((16 << 20) + 1),
            Err(MemoryError::BadSize(_))
        ));
    }
}

/// Errors of saving and loading guest memory files.
#[derive(Debug, thiserror::Error)]
pub enum MemoryFileError {
    /// Writing guest memory to the file failed.
    #[error("cannot write guest memory to the snapshot")]
    Write(#[source] vm_memory::GuestMemoryError),
    /// The memory file cannot be opened or is the wrong size.
    #[error("memory file {path}: {reason}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Mapping the file failed.
    #[error("cannot map the memory file")]
    Map(#[source] vm_memory::mmap::MmapRegionError),
    /// Reading the file into memory failed.
    #[error("cannot read the memory file")]
    Read(#[source] vm_memory::GuestMemoryError),
}

/// Writes every region of `mem`, in address order, into `out` (regions back
/// to back, as [`ram_regions`] lays them out for the same size) and returns
/// the memory's size. Pages that hold only zeros are not written: they stay
/// holes of the sparse file, which read back as zeros, so an idle guest's
/// snapshot costs what it really uses.
pub fn dump(mem: &GuestMemoryMmap, out: &std::fs::File) -> Result<u64, MemoryFileError> {
    use std::os::unix::fs::FileExt;
    use vm_memory::Bytes;
    let io = |e: std::io::Error| MemoryFileError::File {
        path: "(memory file)".into(),
        reason: e.to_string(),
    };
    let layout = file_layout(mem);
    let total: u64 = layout.iter().map(|(_, _, len)| len).sum();
    out.set_len(0)
        .and_then(|()| out.set_len(total))
        .map_err(io)?;
    let mut buf = vec![0u8; DUMP_CHUNK as usize];
    for (start, file_off, len) in layout {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(DUMP_CHUNK) as usize;
            mem.read_slice(&mut buf[..n], GuestAddress(start.0 + done))
                .map_err(MemoryFileError::Write)?;
            for (first, count) in nonzero_page_runs(&buf[..n]) {
                let bytes = &buf[first * PAGE_SIZE as usize..][..count * PAGE_SIZE as usize];
                out.write_all_at(bytes, file_off + done + (first as u64) * PAGE_SIZE)
                    .map_err(io)?;
            }
            done += n as u64;
        }
    }
    Ok(total)
}

/// How much memory [`dump`] copies out at a time.
const DUMP_CHUNK: u64 = 2 << 20;

/// Runs of pages in `buf` holding a non-zero byte, as (first page, count).
fn nonzero_page_runs(buf: &[u8]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, page) in buf.chunks(PAGE_SIZE as usize).enumerate() {
        let zero = page
            .chunks(8)
            .all(|w| w.iter().fold(0u8, |acc, b| acc | b) == 0);
        if zero {
            continue;
        }
        match runs.last_mut() {
            Some((first, count)) if *first + *count == i => *count += 1,
            _ => runs.push((i, 1)),
        }
    }
    runs
}

/// The most one read of a memory file asks for.
const READ_CHUNK: u64 = 64 << 20;

/// How to bring a memory file back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// Map the file copy-on-write: pages load on demand, the file is never
    /// written.
    MapPrivate,
    /// Read the whole file into fresh anonymous memory.
    ReadAll,
}

/// Guest memory of `size` bytes from a file written by [`dump`].
pub fn load(
    path: &std::path::Path,
    size: u64,
    mode: LoadMode,
) -> Result<GuestMemoryMmap, MemoryFileError> {
    use std::sync::Arc;
    use vm_memory::bitmap::AtomicBitmap;
    use vm_memory::mmap::{MmapRegionBuilder, NewBitmap};
    use vm_memory::{FileOffset, GuestRegionMmap};

    let bad = |reason: String| MemoryFileError::File {
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let len = file.metadata().map_err(|e| bad(e.to_string()))?.len();
    if len != size {
        return Err(bad(format!(
            "holds {len} bytes, the snapshot's guest has {size}"
        )));
    }
    if mode == LoadMode::ReadAll {
        let mem = create(size).map_err(|e| bad(e.to_string()))?;
        let mut file = file;
        for (start, region_len) in ram_regions(size) {
            // In chunks: Linux caps one read just below 2 GiB, and a short
            // read would fail the exact read.
            let mut done = 0;
            while done < region_len {
                let chunk = (region_len - done).min(READ_CHUNK);
                vm_memory::Bytes::read_exact_volatile_from(
                    &mem,
                    GuestAddress(start + done),
                    &mut file,
                    chunk as usize,
                )
                .map_err(MemoryFileError::Read)?;
                done += chunk;
            }
        }
        return Ok(mem);
    }
    let file = Arc::new(file);
    let mut regions = Vec::new();
    let mut offset = 0;
    for (start, region_len) in ram_regions(size) {
        let mapping = MmapRegionBuilder::new_with_bitmap(
            region_len as usize,
            AtomicBitmap::with_len(region_len as usize),
        )
        .with_file_offset(FileOffset::from_arc(Arc::clone(&file), offset))
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
        .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
        .build()
        .map_err(MemoryFileError::Map)?;
        regions.push(
            GuestRegionMmap::new(mapping, GuestAddress(start))
                .ok_or_else(|| bad(format!("region at {start:#x} does not fit")))?,
        );
        offset += region_len;
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod file_tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn zero_pages_are_holes() {
        let mut buf = vec![0u8; 6 * PAGE_SIZE as usize];
        buf[PAGE_SIZE as usize + 7] = 1;
        buf[2 * PAGE_SIZE as usize] = 1;
        buf[6 * PAGE_SIZE as usize - 1] = 1;
        assert_eq!(nonzero_page_runs(&buf), vec![(1, 2), (5, 1)]);
        assert!(nonzero_page_runs(&vec![0u8; 8192]).is_empty());
    }

    #[test]
    fn read_all_crosses_read_chunks() {
        let size = READ_CHUNK + (16 << 20);
        let mem = create(size).unwrap();
        let last = GuestAddress(size - 8);
        mem.write_obj(0x5a5a_1234u64, GuestAddress(READ_CHUNK))
            .unwrap();
        mem.write_obj(0x77u64, last).unwrap();
        let path = std::env::temp_dir().join(format!("crvmm-mem-big-{}", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        dump(&mem, &f).unwrap();
        drop(f);
        let back = load(&path, size, LoadMode::ReadAll).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            back.read_obj::<u64>(GuestAddress(READ_CHUNK)).unwrap(),
            0x5a5a_1234
        );
        assert_eq!(back.read_obj::<u64>(last).unwrap(), 0x77);
    }

    #[test]
    fn dump_and_load_both_ways() {
        let mem = create(8 << 20).unwrap();
        mem.write_obj(0x1122_3344_5566_7788u64, GuestAddress(0x10_0000))
            .unwrap();
        mem.write_obj(0xabu8, GuestAddress((8 << 20) - 1)).unwrap();
        let path = std::env::temp_dir().join(format!("crvmm-mem-{}", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        assert_eq!(dump(&mem, &f).unwrap(), 8 << 20);
        drop(f);
        for mode in [LoadMode::MapPrivate, LoadMode::ReadAll] {
            let back = load(&path, 8 << 20, mode).unwrap();
            let v: u64 = back.read_obj(GuestAddress(0x10_0000)).unwrap();
            assert_eq!(v, 0x1122_3344_5566_7788);
            let b: u8 = back.read_obj(GuestAddress((8 << 20) - 1)).unwrap();
            assert_eq!(b, 0xab);
            // Private: writes never reach the file.
            back.write_obj(0u64, GuestAddress(0x10_0000)).unwrap();
        }
        let again = load(&path, 8 << 20, LoadMode::MapPrivate).unwrap();
        let v: u64 = again.read_obj(GuestAddress(0x10_0000)).unwrap();
        assert_eq!(v, 0x1122_3344_5566_7788, "the file is unchanged");
        let err = load(&path, 16 << 20, LoadMode::MapPrivate).unwrap_err();
        assert!(err.to_string().contains("holds 8388608 bytes"), "{err}");
        std::fs::remove_file(path).unwrap();
    }
}

/// The page size of dirty tracking and diff snapshots.
pub const PAGE_SIZE: u64 = 4096;

/// Pages written since the last snapshot: one bit per page of the memory
/// file (regions back to back, as [`dump`] writes them).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirtyMap {
    /// Number of pages described.
    pub pages: u64,
    /// The bits, 64 pages a word, lowest bit first.
    pub words: Vec<u64>,
}

impl DirtyMap {
    /// All clean, for `pages` pages.
    pub fn clean(pages: u64) -> DirtyMap {
        DirtyMap {
            pages,
            words: vec![0; pages.div_ceil(64) as usize],
        }
    }

    /// Marks page `page`.
    pub fn set(&mut self, page: u64) {
        self.words[(page / 64) as usize] |= 1 << (page % 64);
    }

    /// Whether page `page` is dirty.
    pub fn is_set(&self, page: u64) -> bool {
        page < self.pages && self.words[(page / 64) as usize] & (1 << (page % 64)) != 0
    }

    /// How many pages are dirty.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Runs of consecutive dirty pages, as (first page, page count).
    pub fn runs(&self) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for page in (0..self.pages).filter(|p| self.is_set(*p)) {
            match runs.last_mut() {
                Some((start, len)) if *start + *len == page => *len += 1,
                _ => runs.push((page, 1)),
            }
        }
        runs
    }

    /// Checks the map fits a memory of `size` bytes (from an untrusted file).
    pub fn check(&self, size: u64) -> Result<(), String> {
        let pages = size / PAGE_SIZE;
        if self.pages != pages || self.words.len() as u64 != pages.div_ceil(64) {
            return Err(format!(
                "dirty map of {} pages in {} words for {pages} pages of memory",
                self.pages,
                self.words.len()
            ));
        }
        Ok(())
    }
}

/// The memory file offset of each guest region, in file order.
fn file_layout(mem: &GuestMemoryMmap) -> Vec<(GuestAddress, u64, u64)> {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    let mut offset = 0;
    mem.iter()
        .map(|r| {
            let entry = (r.start_addr(), offset, r.len());
            offset += r.len();
            entry
        })
        .collect()
}

/// Writes only the `dirty` pages of `mem` into `file`, at their offsets, and
/// sizes the file to the whole memory (clean pages are holes). Returns the
/// bytes of page data written.
pub fn dump_dirty(
    mem: &GuestMemoryMmap,
    dirty: &DirtyMap,
    file: &std::fs::File,
) -> Result<u64, MemoryFileError> {
    use std::os::unix::fs::FileExt;
    use vm_memory::Bytes;
    let layout = file_layout(mem);
    let total: u64 = layout.iter().map(|(_, _, len)| len).sum();
    let io = |e: std::io::Error| MemoryFileError::File {
        path: "(diff memory file)".into(),
        reason: e.to_string(),
    };
    file.set_len(total).map_err(io)?;
    let mut buf = Vec::new();
    let mut written = 0;
    for (first, count) in dirty.runs() {
        let (offset, len) = (first * PAGE_SIZE, count * PAGE_SIZE);
        let addr = guest_addr(&layout, offset, len).ok_or_else(|| MemoryFileError::File {
            path: "(diff memory file)".into(),
            reason: format!("dirty pages at offset {offset:#x} lie outside guest memory"),
        })?;
        buf.resize(len as usize, 0);
        mem.read_slice(&mut buf, addr)
            .map_err(MemoryFileError::Write)?;
        file.write_all_at(&buf, offset).map_err(io)?;
        written += len;
    }
    Ok(written)
}

/// Copies the `dirty` pages of the memory file at `path` into `mem`.
pub fn apply_dirty(
    mem: &GuestMemoryMmap,
    dirty: &DirtyMap,
    path: &std::path::Path,
) -> Result<u64, MemoryFileError> {
    use std::os::unix::fs::FileExt;
    use vm_memory::Bytes;
    let bad = |reason: String| MemoryFileError::File {
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let layout = file_layout(mem);
    let total: u64 = layout.iter().map(|(_, _, len)| len).sum();
    let len = file.metadata().map_err(|e| bad(e.to_string()))?.len();
    if len != total {
        return Err(bad(format!(
            "holds {len} bytes, the snapshot's guest has {total}"
        )));
    }
    dirty.check(total).map_err(bad)?;
    let mut buf = Vec::new();
    let mut copied = 0;
    for (first, count) in dirty.runs() {
        let (offset, len) = (first * PAGE_SIZE, count * PAGE_SIZE);
        let addr = guest_addr(&layout, offset, len)
            .ok_or_else(|| bad(format!("pages at {offset:#x} lie outside guest memory")))?;
        buf.resize(len as usize, 0);
        file.read_exact_at(&mut buf, offset)
            .map_err(|e| bad(e.to_string()))?;
        mem.write_slice(&buf, addr).map_err(MemoryFileError::Read)?;
        copied += len;
    }
    Ok(copied)
}

/// The guest address of file range `[offset, offset + len)`, when it lies
/// within one region.
fn guest_addr(layout: &[(GuestAddress, u64, u64)], offset: u64, len: u64) -> Option<GuestAddress> {
    layout.iter().find_map(|(start, file_off, region_len)| {
        let rel = offset.checked_sub(*file_off)?;
        (rel + len <= *region_len).then_some(GuestAddress(start.0 + rel))
    })
}
