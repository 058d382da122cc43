//! A container's clocks across a checkpoint: what its processes saw of
//! `CLOCK_MONOTONIC` and `CLOCK_BOOTTIME` when it was frozen (its time
//! namespace's offsets included), and the offsets of a new time namespace
//! in which they go on from there, so that a restored process never sees
//! them go back, in this VM or in one that booted later.

use std::ffi::CString;
use std::io;

use crvmm_cr_image::container::Clocks;

/// `CLOCK_MONOTONIC` and `CLOCK_BOOTTIME` of the guest (the agent's, the
/// root time namespace's), in nanoseconds.
fn host_clocks() -> io::Result<(i128, i128)> {
    let read = |id| -> io::Result<i128> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec we own.
        if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec))
    };
    Ok((read(libc::CLOCK_MONOTONIC)?, read(libc::CLOCK_BOOTTIME)?))
}

/// The offsets of a `/proc/PID/timens_offsets` text, in nanoseconds:
/// (monotonic, boottime). Lines are "<clock> <seconds> <nanoseconds>" with
/// the clock by name or number (1 monotonic, 7 boottime).
pub fn parse_offsets(text: &str) -> Option<(i128, i128)> {
    let (mut mono, mut boot) = (0i128, 0i128);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut f = line.split_whitespace();
        let clock = f.next()?;
        let secs: i64 = f.next()?.parse().ok()?;
        let nanos: i64 = f.next()?.parse().ok()?;
        let value = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
        match clock {
            "monotonic" | "1" => mono = value,
            "boottime" | "7" => boot = value,
            _ => return None,
        }
    }
    Some((mono, boot))
}

/// The clocks as guest process `pid` sees them now.
pub fn seen_by(pid: i32) -> io::Result<Clocks> {
    let (mono, boot) = host_clocks()?;
    let (off_mono, off_boot) = match std::fs::read_to_string(format!("/proc/{pid}/timens_offsets"))
    {
        Ok(text) => parse_offsets(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("timens_offsets {text:?}"),
            )
        })?,
        // A kernel without time namespaces: the host's clocks.
        Err(e) if e.kind() == io::ErrorKind::NotFound => (0, 0),
        Err(e) => return Err(e),
    };
    let clamp = |v: i128| u64::try_from(v.max(0)).unwrap_or(u64::MAX);
    Ok(Clocks {
        monotonic_ns: clamp(mono + off_mono),
        boottime_ns: clamp(boot + off_boot),
    })
}

/// One line of `timens_offsets`: "<clock> <seconds> <nanoseconds>", the
/// nanoseconds in 0..1e9 (the seconds carry the sign).
fn offset_line(clock: &str, ns: i128) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    format!("{clock} {secs} {nanos}\n")
}

/// The `timens_offsets` text of a time namespace in which the clocks read
/// `saved` now and go on from there.
pub fn offsets_for(saved: &Clocks) -> io::Result<CString> {
    let (mono, boot) = host_clocks()?;
    let text = offset_line("monotonic", i128::from(saved.monotonic_ns) - mono)
        + &offset_line("boottime", i128::from(saved.boottime_ns) - boot);
    CString::new(text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_by_name_or_number() {
        let text = "monotonic     -5    250000000\nboottime       3            0\n";
        assert_eq!(parse_offsets(text), Some((-4_750_000_000, 3_000_000_000)));
        assert_eq!(parse_offsets("1 2 0\n7 0 5\n"), Some((2_000_000_000, 5)));
        assert_eq!(parse_offsets("realtime 1 0\n"), None);
        assert_eq!(parse_offsets("monotonic x 0\n"), None);
        assert_eq!(parse_offsets(""), Some((0, 0)));
    }

    #[test]
    fn negative_offsets_keep_nanoseconds_positive() {
        assert_eq!(offset_line("monotonic", -1), "monotonic -1 999999999\n");
        assert_eq!(
            offset_line("boottime", 2_500_000_000),
            "boottime 2 500000000\n"
        );
    }

    #[test]
    fn a_namespace_made_now_reads_the_saved_clocks() {
        let saved = Clocks {
            monotonic_ns: 10_000_000_000_000,
            boottime_ns: 20_000_000_000_000,
        };
        let text = offsets_for(&saved).unwrap();
        let (off_mono, off_boot) = parse_offsets(text.to_str().unwrap()).unwrap();
        let (mono, boot) = host_clocks().unwrap();
        // Within a second of the saved values (the host clock moved on).
        assert!((mono + off_mono - 10_000_000_000_000).abs() < 1_000_000_000);
        assert!((boot + off_boot - 20_000_000_000_000).abs() < 1_000_000_000);
    }
}
