//! Support for tests and benchmarks that run purpose-built payloads:
//! assembling them from `vmm/tests/payloads/*.S` with binutils.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Assembles `vmm/tests/payloads/<name>.S` into a flat binary (the `.text`
/// section), with `as` and `objcopy` from binutils.
pub fn assemble(name: &str) -> Vec<u8> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/payloads")
        .join(format!("{name}.S"));
    let dir = scratch_dir("payload");
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
    let code = std::fs::read(&bin).expect("objcopy wrote the payload");
    let _ = std::fs::remove_dir_all(&dir);
    code
}

/// A fresh, empty directory under the system temp dir.
pub fn scratch_dir(what: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "crvmm-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a scratch directory");
    dir
}
