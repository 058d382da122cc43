//! `enum cr_rec_type`: the record types, their names and the payload
//! lengths each may have.

use std::mem::size_of;

use serde::Serialize;

use super::{
    Creds, ErrorHeader, File, Files, ImageHeader, Mm, PagesHeader, Regs, Sighand, SignalsHeader,
    Task, Thread, Trailer, Vma, XstateHeader, MAX_DELETED, MAX_ERROR_MSG, MAX_GROUPS, MAX_PATH,
    MAX_PENDING, MAX_XSTATE, PAGES_PER_CHUNK, PAGE_ENTRY_LEN, SIGINFO_SIZE,
};

/// `enum cr_rec_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordType {
    /// `CR_REC_HEADER`.
    Header = 1,
    /// `CR_REC_TASK`.
    Task = 2,
    /// `CR_REC_CREDS`.
    Creds = 3,
    /// `CR_REC_SIGHAND`.
    Sighand = 4,
    /// `CR_REC_REGS`.
    Regs = 5,
    /// `CR_REC_XSTATE`.
    Xstate = 6,
    /// `CR_REC_MM`.
    Mm = 7,
    /// `CR_REC_VMA`.
    Vma = 8,
    /// `CR_REC_PAGES`.
    Pages = 9,
    /// `CR_REC_ERROR`.
    Error = 10,
    /// `CR_REC_TRAILER`.
    Trailer = 11,
    /// `CR_REC_SIGNALS`.
    Signals = 12,
    /// `CR_REC_THREAD`.
    Thread = 13,
    /// `CR_REC_FILES`.
    Files = 14,
    /// `CR_REC_FILE`.
    File = 15,
}

impl RecordType {
    /// The type of a record header's type field, if defined.
    pub fn from_u32(value: u32) -> Option<Self> {
        use RecordType::*;
        Some(match value {
            1 => Header,
            2 => Task,
            3 => Creds,
            4 => Sighand,
            5 => Regs,
            6 => Xstate,
            7 => Mm,
            8 => Vma,
            9 => Pages,
            10 => Error,
            11 => Trailer,
            12 => Signals,
            13 => Thread,
            14 => Files,
            15 => File,
            _ => return None,
        })
    }

    /// Its name, as the kernel's log calls it.
    pub fn name(self) -> &'static str {
        use RecordType::*;
        match self {
            Header => "header",
            Task => "task",
            Creds => "creds",
            Sighand => "sighand",
            Regs => "regs",
            Xstate => "xstate",
            Mm => "mm",
            Vma => "vma",
            Pages => "pages",
            Error => "error",
            Trailer => "trailer",
            Signals => "signals",
            Thread => "thread",
            Files => "files",
            File => "file",
        }
    }

    /// The payload lengths a record of this type may have: restart's
    /// bounds (`cr_read_hdr()`), and the writer's for the error record,
    /// which restart never reads. All are within `CR_MAX_RECORD` (the
    /// largest, a signals or thread record with `CR_MAX_PENDING` queued
    /// signals, is 8 MiB and a little).
    pub fn len_bounds(self) -> (u32, u32) {
        let size = |n: usize| n as u32;
        let fixed = |n: usize| (n as u32, n as u32);
        match self {
            RecordType::Header => fixed(size_of::<ImageHeader>()),
            RecordType::Task => fixed(size_of::<Task>()),
            RecordType::Creds => {
                let min = size(size_of::<Creds>());
                (min, min + MAX_GROUPS * 4)
            }
            RecordType::Sighand => fixed(size_of::<Sighand>()),
            RecordType::Regs => fixed(size_of::<Regs>()),
            RecordType::Xstate => {
                let min = size(size_of::<XstateHeader>());
                (min, min + MAX_XSTATE)
            }
            RecordType::Mm => fixed(size_of::<Mm>()),
            RecordType::Vma => {
                let min = size(size_of::<Vma>());
                (min, min + MAX_PATH)
            }
            RecordType::Pages => {
                let min = size(size_of::<PagesHeader>());
                (min, min + PAGES_PER_CHUNK * PAGE_ENTRY_LEN as u32)
            }
            RecordType::Error => {
                let min = size(size_of::<ErrorHeader>());
                (min, min + MAX_ERROR_MSG)
            }
            RecordType::Trailer => fixed(size_of::<Trailer>()),
            RecordType::Signals => {
                let min = size(size_of::<SignalsHeader>());
                let timers = super::MAX_TIMERS * size_of::<super::PosixTimer>() as u32;
                (min, min + MAX_PENDING * SIGINFO_SIZE as u32 + timers)
            }
            RecordType::Thread => {
                let min = size(size_of::<Thread>());
                (min, min + MAX_PENDING * SIGINFO_SIZE as u32)
            }
            RecordType::Files => {
                let min = size(size_of::<Files>());
                (min, min + MAX_PATH)
            }
            RecordType::File => {
                let min = size(size_of::<File>());
                (min, min + MAX_PATH + MAX_DELETED as u32)
            }
        }
    }
}

impl std::fmt::Display for RecordType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
