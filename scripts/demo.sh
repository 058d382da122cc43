#!/usr/bin/env bash
# The main job (`make demo`): a checkpoint/restart lab on the QEMU engine.
#
#  1. Boot two guests, A and B, with the agent on vsock.
#  2. In A, run a container whose counter keeps 16 MiB of patterned memory.
#  3. Checkpoint it with --leave-running (it keeps counting), then again
#     with zstd and kill, streaming the image to the host; verify the image.
#  4. Restore it in B (a migration): same hostname, its counter is pid 1
#     and goes on from where it stood, its memory checks out.
#  5. Run the same workload in a third guest and snapshot that whole VM,
#     restore it in a new process: the counter goes on there too.
#  6. Compare: bytes on disk and how long the workload stood still.
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
crvmm="${CARGO_TARGET_DIR:-$root/target}/release/crvmm"
guest="$root/target/guest"
[ -x "$crvmm" ] || { echo "demo: build crvmm first: cargo build --release -p crvmm" >&2; exit 1; }
[ -e "$guest/vmlinux" ] || { echo "demo: build the guest first: scripts/build-guest.sh" >&2; exit 1; }

export CRVMM_RUN_DIR=$(mktemp -d /tmp/crvmm-demo.XXXXXX)
work="$CRVMM_RUN_DIR.work"
mkdir -p "$work"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
	rm -rf "$CRVMM_RUN_DIR" "$work"
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
counter=/usr/lib/crvmm/programs/counter

boot() { # name channel
	"$crvmm" run --name "$1" --console log --kernel "$guest/vmlinux" \
		--initrd "$guest/initramfs.cpio.gz" --vcpus 2 --mem-mib 384 \
		--channel "$2" 2>"$work/$1.log" &
	pids+=($!)
	until grep -q "agent ready" "$work/$1.log"; do
		kill -0 "${pids[-1]}" 2>/dev/null || { cat "$work/$1.log" >&2; exit 1; }
		sleep 0.2
	done
	grep "crvmm:" "$work/$1.log"
}
json_field() { # file key
	sed -n "s/.*\"$2\": *\"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p" "$1" | head -n1
}

say "boot guests A and B: $(cat "$guest/release"), agent on vsock"
boot a vsock
boot b vsock

say "in A: a container whose counter holds 16 MiB of patterned memory"
"$crvmm" container create --vm a --id web --hostname web -- "$counter" 16 /tmp/state
sleep 2
"$crvmm" container exec --vm a web -- sh -c 'hostname; cat /tmp/state'

say "checkpoint it and let it run on (the image streams to the host over vsock)"
"$crvmm" container checkpoint --vm a web --leave-running -o "$work/web-1.img" --json >"$work/ckpt1.json"
echo "checkpointed: $(json_field "$work/ckpt1.json" image_bytes) bytes, the container stood $(($(json_field "$work/ckpt1.json" downtime_us) / 1000)) ms"
sleep 1
"$crvmm" container exec --vm a web -- cat /tmp/state

say "checkpoint it again, zstd-compressed, and kill it (a migration)"
"$crvmm" container checkpoint --vm a web --zstd -o "$work/web.img.zst" --json >"$work/ckpt.json"
cat "$work/ckpt.json"
"$crvmm" container list --vm a
ls -l "$work"/web-1.img "$work"/web.img.zst
"$crvmm" image verify "$work/web.img.zst"

say "restore it in B: the counter goes on, as pid 1, with the same hostname"
t0=${EPOCHREALTIME/./}
"$crvmm" container restore --vm b web --input "$work/web.img.zst"
ct_restore_ms=$(((${EPOCHREALTIME/./} - t0) / 1000))
sleep 1
"$crvmm" container exec --vm b web -- sh -c 'hostname; cat /proc/1/comm; cat /tmp/state'
sleep 1
"$crvmm" container exec --vm b web -- sh -c 'cat /tmp/state; kill -USR1 1; sleep 1; cat /tmp/state.verdict'

say "the same workload, snapshotted as a whole VM (virtio-serial agent: migratable)"
boot s serial
"$crvmm" agent s exec -- sh -c "$counter 16 /tmp/state >/dev/null 2>&1 &"
sleep 2
"$crvmm" snapshot create s "$work/vm-snapshot" --after exit 2>&1 | tee "$work/snap.txt"
t0=${EPOCHREALTIME/./}
"$crvmm" snapshot restore "$work/vm-snapshot" --name s2 2>"$work/s2.log" &
pids+=($!)
until grep -q "restored from" "$work/s2.log"; do
	kill -0 "${pids[-1]}" 2>/dev/null || { cat "$work/s2.log" >&2; exit 1; }
	sleep 0.05
done
vm_restore_ms=$(((${EPOCHREALTIME/./} - t0) / 1000))
"$crvmm" agent s2 exec -- sh -c 'cat /tmp/state; kill -USR1 $(pidof counter); sleep 1; cat /tmp/state.verdict'

say "compare: container checkpoint vs whole-VM snapshot of the same workload"
plain=$(stat -c %s "$work/web-1.img")
zst=$(stat -c %s "$work/web.img.zst")
vm=$(du -sb "$work/vm-snapshot" | cut -f1)
down1_us=$(json_field "$work/ckpt1.json" downtime_us)
down_us=$(json_field "$work/ckpt.json" downtime_us)
vm_down=$(sed -n 's/.*guest paused \([0-9]*\) ms.*/\1/p' "$work/snap.txt")
printf '%-34s %12s %14s %12s\n' "" "bytes" "workload stood" "restore"
printf '%-34s %12s %11s ms %12s\n' "container image (plain, ran on)" "$plain" "$((down1_us / 1000))" "-"
printf '%-34s %12s %11s ms %9s ms\n' "container image (zstd, killed)" "$zst" "$((down_us / 1000))" "$ct_restore_ms"
printf '%-34s %12s %11s ms %9s ms\n' "whole-VM snapshot (QEMU)" "$vm" "${vm_down:-?}" "$vm_restore_ms"
echo "(times under TCG on a shared host; the container restore is measured from the"
echo " host command, the VM restore until the new QEMU runs the restored guest)"

say "shut down"
for vm in a b s2; do "$crvmm" stop "$vm"; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()
echo "VMs stopped; run directory cleaned: $(ls -A "$CRVMM_RUN_DIR" | wc -l) entries left"
