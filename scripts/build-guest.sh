#!/usr/bin/env bash
# Build everything a crvmm guest needs and link it at a stable place:
#
#   target/guest/vmlinux           -> kernel cache (ELF, PVH entry)
#   target/guest/bzImage           -> kernel cache
#   target/guest/initramfs.cpio.gz -> initramfs cache
#   target/guest/release           the kernel release string (a copy)
#   target/guest/init-only.cpio    an initramfs whose /init just exits
#
# (target/guest-<variant>/ for a variant other than default.)
#
#   scripts/build-guest.sh [--variant default|debug] [--quiet]
#
# Steps: guest-kernel/build.sh, the static guest agent (cargo, crate
# crvmm-agent), resources/build-initramfs.sh. Every step is cached, so a
# run with nothing changed takes about a second (mostly cargo's check).
#
# Environment:
#   CRVMM_AGENT_BIN   use this static agent binary instead of building
#                     crvmm-agent with cargo
#   CRVMM_CACHE_DIR   cache root of the kernel and initramfs builds
#   CARGO_TARGET_DIR  honoured when locating the agent binary
set -euo pipefail

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)

variant=default
quiet=()
usage() {
	echo "usage: $0 [--variant default|debug] [--quiet]" >&2
	exit 2
}
while [ $# -gt 0 ]; do
	case $1 in
	--variant) [ $# -ge 2 ] || usage; variant=$2; shift 2 ;;
	--variant=*) variant=${1#*=}; shift ;;
	--quiet | -q) quiet=(--quiet); shift ;;
	*) usage ;;
	esac
done

t0=${EPOCHREALTIME/./}
step_start=$t0
elapsed() { # microseconds since $1, as seconds with one decimal
	local us=$((${EPOCHREALTIME/./} - $1))
	printf '%d.%ds' $((us / 1000000)) $((us % 1000000 / 100000))
}
summary() { # step name, details
	printf '%-10s %7s  %s\n' "$1" "$(elapsed "$step_start")" "$2"
	step_start=${EPOCHREALTIME/./}
}

# 1. Kernel.
kdir=$("$root/guest-kernel/build.sh" --variant "$variant" "${quiet[@]}" | tail -n1)
[ -d "$kdir" ] || { echo "build-guest: kernel build gave no directory" >&2; exit 1; }
summary kernel "$(cat "$kdir/release")  $kdir"

# 2. Agent.
if [ -n "${CRVMM_AGENT_BIN:-}" ]; then
	agent=$(readlink -f -- "$CRVMM_AGENT_BIN")
	[ -f "$agent" ] || { echo "build-guest: CRVMM_AGENT_BIN=$CRVMM_AGENT_BIN not found" >&2; exit 1; }
	summary agent "$agent (CRVMM_AGENT_BIN)"
else
	if [ ! -f "$root/guest-agent/Cargo.toml" ]; then
		echo "build-guest: $root/guest-agent is missing; set CRVMM_AGENT_BIN to a static agent binary" >&2
		exit 1
	fi
	triple=x86_64-unknown-linux-gnu
	(cd "$root" && RUSTFLAGS="-C target-feature=+crt-static" \
		cargo build --release -p crvmm-agent --target "$triple" "${quiet[@]}")
	agent="${CARGO_TARGET_DIR:-$root/target}/$triple/release/crvmm-agent"
	case $agent in /*) ;; *) agent="$root/$agent" ;; esac
	[ -f "$agent" ] || { echo "build-guest: cargo built no $agent" >&2; exit 1; }
	summary agent "$agent"
fi

# 3. Initramfs.
cpio=$("$root/resources/build-initramfs.sh" --agent "$agent" "${quiet[@]}" | tail -n1)
[ -f "$cpio" ] || { echo "build-guest: initramfs build gave no file" >&2; exit 1; }
summary initramfs "$cpio"

# 4. Stable links (each replaced atomically: new link, then rename over).
# Other variants get their own directory, so that building the debug kernel
# never swaps the kernel under the default tests.
dest="$root/target/guest"
[ "$variant" = default ] || dest="$root/target/guest-$variant"
mkdir -p "$dest"

# 5. A one-file initramfs whose /init exits at once (resources/programs/
# exit0.S): for tests that follow a kernel to the hand-over to init where
# no user space can run (nested PVM), and where unpacking the full one
# would take minutes. Tiny and deterministic, so it is simply rebuilt.
tiny_dir=$(mktemp -d)
trap 'rm -rf "$tiny_dir"' EXIT
mkdir -p "$tiny_dir/stage"
as --64 -o "$tiny_dir/init.o" "$root/resources/programs/exit0.S"
ld -static -nostdlib -e _start --build-id=none -o "$tiny_dir/stage/init" "$tiny_dir/init.o"
touch -h -d @0 "$tiny_dir/stage/init"
(cd "$tiny_dir/stage" && echo init | cpio --quiet -o -H newc --reproducible --owner=0:0) >"$dest/.init-only.cpio.new"
mv -Tf -- "$dest/.init-only.cpio.new" "$dest/init-only.cpio"
link() { # target, name
	ln -sfn -- "$1" "$dest/.$2.new"
	mv -Tf -- "$dest/.$2.new" "$dest/$2"
}
link "$kdir/vmlinux" vmlinux
link "$kdir/bzImage" bzImage
link "$cpio" initramfs.cpio.gz
cp -f -- "$kdir/release" "$dest/.release.new"
mv -Tf -- "$dest/.release.new" "$dest/release"
summary links "$dest/{vmlinux,bzImage,initramfs.cpio.gz,init-only.cpio,release}"
step_start=$t0
summary total "guest $(cat "$dest/release") ready in $dest"
