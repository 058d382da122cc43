//! Writes the seed corpus: `cargo run --example seeds --no-default-features`
//! (from `snapshot/fuzz`) replaces `corpus/state_file/seed-*`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/state_file");
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
        {
            std::fs::remove_file(path)?;
        }
    }
    // The valid seeds must decode back to what was encoded.
    use crvmm_snapshot_fuzz::{machine, minimal, Machine, CAP};
    for state in [machine(), minimal()] {
        let bytes = crvmm_snapshot::encode(&state);
        let (_, back): (_, Machine) = crvmm_snapshot::read(&mut &bytes[..], CAP).expect("decodes");
        assert_eq!(back, state);
    }
    let mut total = 0;
    for (name, bytes) in crvmm_snapshot_fuzz::seeds() {
        total += bytes.len();
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    println!(
        "wrote {} seeds, {total} bytes, to {}",
        crvmm_snapshot_fuzz::seeds().len(),
        dir.display()
    );
    Ok(())
}
