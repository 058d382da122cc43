#!/usr/bin/env bash
# Build the crvmm guest initramfs (gzip'd newc cpio), cached by its inputs.
#
#   resources/build-initramfs.sh --agent <static-agent-binary> [--quiet]
#
# The last line of stdout is the absolute path of initramfs.cpio.gz; all
# else goes to stderr. Contents:
#   /init                          the agent (runs as PID 1 and mounts
#                                  /proc, /sys, /dev, ... itself)
#   /bin/busybox + /bin/<applet>   symlinks for every `busybox --list` applet
#   /sbin, /usr/bin, /usr/sbin     symlinks to /bin
#   /dev/console, /dev/null        device nodes, for before devtmpfs is mounted
#   /etc/passwd, /etc/group        root and nobody
#   /proc /sys /tmp /run /root /var /mnt   empty mount points / directories
#   /usr/share/crvmm/rootfs/       a base root file system for containers:
#                                  busybox, the programs, /etc (hard links)
#   /usr/lib/crvmm/programs/<name> resources/programs/<name>.c, built with
#                                  gcc -static -O2 -Wall -Werror, plus the
#                                  libraries a "crvmm-ldflags:" line names
#                                  (zstdpipe: libzstd.a)
#
# Reproducible: the same inputs give a byte-identical archive (entries
# sorted by name, owner 0:0, every mtime 0, `cpio --reproducible` for
# inode/device numbers, `gzip -n`, no name or time in the gzip header;
# checked by building twice into two caches and comparing sha256sum).
#
# Cache: $CRVMM_CACHE_DIR (else $XDG_CACHE_HOME/crvmm, else ~/.cache/crvmm)
#   initramfs/<key16>/initramfs.cpio.gz (+ key, inputs, contents), published
#   by renaming a finished temporary sibling directory.
# Key: sha256 of the agent, /bin/busybox, every resources/programs/*.c and
# *.h, the static libraries they link, this script and the first line of
# `gcc --version`.
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)

agent=''
quiet=0
usage() {
	echo "usage: $0 --agent <path-to-static-agent-binary> [--quiet]" >&2
	exit 2
}
while [ $# -gt 0 ]; do
	case $1 in
	--agent) [ $# -ge 2 ] || usage; agent=$2; shift 2 ;;
	--agent=*) agent=${1#*=}; shift ;;
	--quiet | -q) quiet=1; shift ;;
	*) usage ;;
	esac
done
[ -n "$agent" ] || usage

log() { if [ "$quiet" = 0 ]; then echo "initramfs: $*" >&2; fi; }
die() { echo "initramfs: error: $*" >&2; exit 1; }

# Install missing packages (root, unless CRVMM_NO_INSTALL is set) or print
# the command that would.
ensure_packages() {
	local status p missing=()
	status=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "$@" 2>/dev/null || true)
	for p in "$@"; do
		[[ $'\n'$status == *$'\n'"$p ii"* ]] || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" = 0 ] && [ -z "${CRVMM_NO_INSTALL:-}" ]; then
		log "installing missing packages: ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y "${missing[@]}" >&2 ||
			{ apt-get update >&2 && apt-get install -y "${missing[@]}" >&2; } ||
			die "could not install: ${missing[*]}"
	else
		echo "initramfs: missing packages: ${missing[*]}; install them with:" >&2
		echo "apt-get install -y ${missing[*]}" >&2
		exit 1
	fi
}
ensure_packages busybox-static cpio gzip gcc libc6-dev libzstd-dev

busybox=/bin/busybox
[ -f "$agent" ] || die "agent binary $agent not found"
agent=$(readlink -f -- "$agent")
[ -x "$busybox" ] || die "$busybox not found (package busybox-static)"

export LC_ALL=C SOURCE_DATE_EPOCH=0 TZ=UTC
umask 022

programs=() sources=()
for src in "$here"/programs/*.c; do
	[ -e "$src" ] || continue
	programs+=("$(basename -- "$src" .c)")
	sources+=("programs/$(basename -- "$src")")
done

# A program names the libraries it links in a comment line
# "crvmm-ldflags: -lfoo"; the static archives are part of the cache key.
ldflags_of() {
	sed -n 's/^.*crvmm-ldflags:[[:space:]]*//p' "$1" | head -n1
}
static_libs=()
for src in "${sources[@]}"; do
	for flag in $(ldflags_of "$here/$src"); do
		case $flag in
		-l*)
			lib=$(gcc -print-file-name="lib${flag#-l}.a")
			[ -f "$lib" ] || die "$src needs lib${flag#-l}.a, which gcc does not find"
			static_libs+=("$lib")
			;;
		esac
	done
done

gcc_version=$(gcc --version | sed -n 1p)
key_inputs=$(
	echo "crvmm initramfs key v1"
	echo "gcc $gcc_version"
	h=$(sha256sum -- "$agent") && echo "${h%% *}  agent"
	h=$(sha256sum -- "$busybox") && echo "${h%% *}  busybox"
	for lib in "${static_libs[@]}"; do
		h=$(sha256sum -- "$lib") && echo "${h%% *}  $(basename -- "$lib")"
	done
	cd "$here" && sha256sum -- build-initramfs.sh "${sources[@]}" programs/*.h
)
key=$(sha256sum <<<"$key_inputs")
key=${key%% *}
cache=${CRVMM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/crvmm}
mkdir -p "$cache/initramfs"
cache=$(cd -- "$cache" && pwd -P)
out="$cache/initramfs/${key:0:16}"

is_complete() {
	local k=''
	[ -f "$out/initramfs.cpio.gz" ] && [ -f "$out/key" ] || return 1
	read -r k <"$out/key" || true
	[ "$k" = "$key" ]
}
if is_complete; then
	log "cached $out/initramfs.cpio.gz"
	echo "$out/initramfs.cpio.gz"
	exit 0
fi

exec 9>"$cache/initramfs/.lock"
flock 9
if is_complete; then
	echo "$out/initramfs.cpio.gz"
	exit 0
fi
rm -rf "$cache"/initramfs/.tmp-*

[ "$(id -u)" = 0 ] || die "must run as root (it creates /dev/console and /dev/null with mknod)"
if LC_ALL=C readelf -lW "$agent" 2>/dev/null | grep -q 'Requesting program interpreter'; then
	die "$agent is dynamically linked; /init must be a static binary"
fi

start=${EPOCHREALTIME/./}
tmp="$cache/initramfs/.tmp-${key:0:16}.$$"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/root"
r="$tmp/root"

# Directories.
mkdir -p "$r"/{bin,dev,etc,mnt,proc,root,run,sys,tmp,var}
mkdir -p "$r/usr/lib/crvmm/programs"
chmod 0700 "$r/root"
chmod 1777 "$r/tmp"
ln -s bin "$r/sbin"
ln -s ../bin "$r/usr/bin"
ln -s ../bin "$r/usr/sbin"

# /init and busybox with its applets.
install -m 0755 "$agent" "$r/init"
install -m 0755 "$busybox" "$r/bin/busybox"
"$busybox" --list | while read -r applet; do
	case $applet in "" | busybox | */*) continue ;; esac
	ln -s busybox "$r/bin/$applet"
done

# Device nodes the kernel and init need before devtmpfs is mounted.
mknod -m 0600 "$r/dev/console" c 5 1
mknod -m 0666 "$r/dev/null" c 1 3

# Users.
cat >"$r/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$r/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
EOF
chmod 0644 "$r/etc/passwd" "$r/etc/group"

# Test programs (stripped static binaries: no paths or build ids of the
# temporary directory end up in them).
for p in "${programs[@]}"; do
	log "compiling programs/$p.c"
	(cd "$here/programs" && gcc -static -O2 -Wall -Werror -s -Wl,--build-id=none \
		-o "$r/usr/lib/crvmm/programs/$p" "$p.c" $(ldflags_of "$p.c")) ||
		die "programs/$p.c does not compile"
done

# A base root file system for containers: busybox and the test programs
# (hard links: no second copy in the archive), /etc, and empty mount points.
# Containers get it read-only, with their own /proc, /tmp and so on.
base="$r/usr/share/crvmm/rootfs"
mkdir -p "$base"/{bin,dev,etc,proc,root,run,sys,tmp,usr/lib/crvmm/programs}
chmod 0700 "$base/root"
chmod 1777 "$base/tmp"
ln -s bin "$base/sbin"
ln -s ../bin "$base/usr/bin"
ln "$r/bin/busybox" "$base/bin/busybox"
find "$r/bin" -type l -printf '%f\n' | while read -r applet; do
	ln -s busybox "$base/bin/$applet"
done
for p in "${programs[@]}"; do
	ln "$r/usr/lib/crvmm/programs/$p" "$base/usr/lib/crvmm/programs/$p"
done
cp -p "$r/etc/passwd" "$r/etc/group" "$base/etc/"
echo container >"$base/etc/hostname"

# Normalise ownership and times, then archive in sorted order.
chown -hR 0:0 "$r"
find "$r" -exec touch -h -d @0 {} +
(cd "$r" && find . -mindepth 1 -printf '%P\n' | sort |
	cpio -o -H newc --reproducible -R 0:0 --quiet) | gzip -9 -n >"$tmp/initramfs.cpio.gz"
gzip -dc "$tmp/initramfs.cpio.gz" | cpio -itv --quiet >"$tmp/contents"
rm -rf "$r"
printf '%s\n' "$key_inputs" >"$tmp/inputs"
printf '%s\n' "$key" >"$tmp/key"
rm -rf "$out"
mv -T "$tmp" "$out"

el=$(((${EPOCHREALTIME/./} - start) / 1000))
log "built $out/initramfs.cpio.gz ($(stat -c %s "$out/initramfs.cpio.gz") bytes, ${#programs[@]} programs, ${el} ms)"
echo "$out/initramfs.cpio.gz"
