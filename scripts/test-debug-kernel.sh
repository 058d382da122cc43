#!/usr/bin/env bash
# Run the checkpoint/restart tests on the debug guest kernel: KASAN,
# kmemleak, lockdep and object debugging (guest-kernel/config/debug.config).
# Every test ends by asserting that the kernel log has no BUG, WARNING,
# oops or KASAN report and that kmemleak finds no unreferenced object, so
# this checks that no path of checkpoint() or restart() -- the refusals and
# the damaged images above all -- corrupts or leaks kernel memory.
#
#   scripts/test-debug-kernel.sh [cargo test filter...]
#
# The first run builds the debug kernel (about 16 minutes on 2 cores; cached
# like the default one) into target/guest-debug/. The guests boot its
# bzImage: its KASAN ELF vmlinux does not boot by PVH under QEMU.
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root"
scripts/build-guest.sh --variant debug
export CRVMM_GUEST_DIR="$root/target/guest-debug" CRVMM_GUEST_KERNEL=bzImage
# One guest at a time: a KASAN kernel under TCG is slow enough.
cargo test -p crvmm-tests --test checkpoint -- --test-threads=1 "$@"
