# The two entry points of a fresh machine; everything they need they set up.
.PHONY: demo test setup guest bench test-debug-kernel

# The main job: boot a guest and drive it through its agent (scripts/demo.sh).
demo: guest
	cargo build --release --quiet -p crvmm
	bash scripts/demo.sh

# Everything CI runs.
test:
	bash scripts/test.sh

# The checkpoint/restart tests on the KASAN/kmemleak guest kernel (slow; not in CI).
test-debug-kernel: setup
	bash scripts/test-debug-kernel.sh

setup:
	bash scripts/setup.sh

guest: setup
	bash scripts/build-guest.sh

bench: guest
	cargo bench -p crvmm-tests --bench qemu_boot
	cargo bench -p crvmm-vmm --bench startup
	cargo bench -p crvmm-vmm --bench snapshot
	cargo bench -p crvmm-tests --bench qemu_snapshot
	cargo bench -p crvmm-tests --bench checkpoint
	cargo bench -p crvmm-tests --bench container_checkpoint
	cargo bench -p crvmm-devices --bench vsock_throughput
