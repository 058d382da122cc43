#!/usr/bin/env bash
# The test command (`make test`): set the host up, build the guest (cached),
# check formatting and lints, run every test, and run the benchmark once in
# its smallest form so it cannot rot.
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root"

step() { printf '\n== %s\n' "$*" >&2; }

step "host set-up"
bash scripts/setup.sh
step "guest build (kernel, agent, initramfs; cached)"
bash scripts/build-guest.sh
step "format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
step "benchmark smoke run (1 boot, 20 calls per channel)"
cargo bench --quiet -p crvmm-tests --bench qemu_boot -- 1 20
step "tests"
log=target/test.log
cargo test --workspace 2>&1 | tee "$log"
# One closing line for the whole workspace (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
	END { printf "workspace: %d passed, %d failed\n", p, f }' "$log"
