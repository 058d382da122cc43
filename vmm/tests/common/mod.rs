//! Helpers shared by the KVM integration tests.

use std::path::{Path, PathBuf};

#[allow(unused_imports)]
pub use crvmm_vmm::testing::{assemble, scratch_dir as temp_dir};

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
