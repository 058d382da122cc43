#!/usr/bin/env bash
# The main job (`make demo`): boot a guest under the QEMU engine, drive it
# through its agent, pause and resume it with a workload running, snapshot
# the whole VM and restore it in a new process, where the workload counts
# on, then shut it down. Container checkpoint/restart and its comparison with
# VM snapshots join this script as they land.
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
crvmm="${CARGO_TARGET_DIR:-$root/target}/release/crvmm"
guest="$root/target/guest"
[ -x "$crvmm" ] || { echo "demo: build crvmm first: cargo build --release -p crvmm" >&2; exit 1; }
[ -e "$guest/vmlinux" ] || { echo "demo: build the guest first: scripts/build-guest.sh" >&2; exit 1; }

export CRVMM_RUN_DIR=$(mktemp -d /tmp/crvmm-demo.XXXXXX)
log="$CRVMM_RUN_DIR.log"
name=demo
pid=
snap="$CRVMM_RUN_DIR.snapshot"
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$CRVMM_RUN_DIR" "$log" "$snap"
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
agent() { "$crvmm" agent "$name" "$@"; }

say "boot: $(cat "$guest/release") under the QEMU engine, agent over virtio-serial (migratable)"
"$crvmm" run --name "$name" --console log --kernel "$guest/vmlinux" \
	--initrd "$guest/initramfs.cpio.gz" --vcpus 2 --channel serial 2>"$log" &
pid=$!
until grep -q "agent ready" "$log"; do
	kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
	sleep 0.2
done
grep "crvmm:" "$log"

say "the agent answers"
agent hello
agent exec -- sh -c 'uname -a; echo "checkpoint image format: $(cat /sys/kernel/checkpoint/format_version)"'

say "a workload: counter, 16 MiB of patterned memory, counting in the guest"
agent exec -- sh -c '/usr/lib/crvmm/programs/counter 16 /tmp/counter.state >/dev/null 2>&1 &'
sleep 1
agent exec -- cat /tmp/counter.state

say "pause the whole VM for 2 s, resume: the counter goes on from where it stood"
"$crvmm" pause "$name"
"$crvmm" list
sleep 2
"$crvmm" resume "$name"
agent exec -- cat /tmp/counter.state
sleep 1
agent exec -- cat /tmp/counter.state
agent exec -- sh -c 'kill -USR1 $(pidof counter); sleep 0.5; cat /tmp/counter.state.verdict'

say "snapshot the whole VM and end it; restore it in a new crvmm process"
"$crvmm" snapshot create "$name" "$snap" --after exit
wait "$pid" || true
pid=
ls -l "$snap"
"$crvmm" snapshot restore "$snap" --name restored 2>"$log" &
pid=$!
until grep -q "restored from" "$log"; do
	kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
	sleep 0.2
done
grep "crvmm:" "$log"
name=restored
agent exec -- cat /tmp/counter.state
sleep 1
agent exec -- cat /tmp/counter.state
agent exec -- sh -c 'kill -USR1 $(pidof counter); sleep 0.5; cat /tmp/counter.state.verdict'

say "not yet in this build: container checkpoint/restart, and its comparison with VM snapshots"

say "shut down"
"$crvmm" stop "$name"
wait "$pid"
pid=
echo "VM stopped; run directory cleaned: $(ls -A "$CRVMM_RUN_DIR" | wc -l) entries left"
