//! Helpers shared by the KVM integration tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Assembles `tests/payloads/<name>.S` into a flat binary with binutils.
#[allow(dead_code)]
pub fn assemble(name: &str) -> Vec<u8> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/payloads")
        .join(format!("{name}.S"));
    let dir = temp_dir("payload");
    let obj = dir.join(format!("{name}.o"));
    let bin = dir.join(format!("{name}.bin"));
    let ok = Command::new("as")
        .arg("--64")
        .arg("-o")
        .arg(&obj)
        .arg(&src)
        .status();
    assert!(
        ok.is_ok_and(|s| s.success()),
        "assembling {} failed (is binutils installed?)",
        src.display()
    );
    let ok = Command::new("objcopy")
        .args(["-O", "binary", "-j", ".text"])
        .arg(&obj)
        .arg(&bin)
        .status();
    assert!(ok.is_ok_and(|s| s.success()), "objcopy failed");
    let code = std::fs::read(&bin).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    code
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(what: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "crvmm-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A built guest file from `target/guest` (or `$CRVMM_GUEST_DIR`).
#[allow(dead_code)]
pub fn guest_file(name: &str) -> PathBuf {
    let dir = std::env::var_os("CRVMM_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/guest"));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-guest.sh",
        path.display()
    );
    path
}
