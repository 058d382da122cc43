#!/usr/bin/env bash
# Build the crvmm guest kernel (vmlinux + bzImage), cached by its inputs.
#
#   guest-kernel/build.sh [--variant default|debug] [--quiet]
#
# The last line of stdout is the absolute artifact directory, so callers do
#   dir=$(guest-kernel/build.sh | tail -n1)
# Everything else (progress, warnings, errors) goes to stderr.
#
# Cache ($CRVMM_CACHE_DIR, else $XDG_CACHE_HOME/crvmm, else ~/.cache/crvmm):
#   kernel/<variant>-<key16>/  published artifacts: vmlinux bzImage config
#                              release key inputs build.log (complete or absent:
#                              built in a .tmp-* sibling, then renamed in place)
#   kernel-src/<sha16>/        pristine unpacked tarball, one per tarball sha256
#   kernel-src/tarballs        tarball path + stat -> sha256 + version (so a
#                              cache hit does not hash 150 MB every time)
#   kernel-tree/<variant>/     persistent working tree for incremental builds
#
# The key is the sha256 of: the tarball's sha256 and kernel version, the
# variant, the first line of `gcc --version`, and the contents of the
# variant's config fragments, patches/series, every patch in it, and this
# script. See README.md.
#
# Working tree policy (simplest correct approach): the tree remembers the
# tarball sha256 + series + patch contents it was made from. If that changed,
# it is deleted and re-made as a plain copy of the pristine source (no hard
# links, so patching can never write into the pristine copy) with the series
# applied: a full rebuild. If only the config changed, the tree and its
# objects are kept and Kbuild rebuilds what the changed options affect.
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)

variant=default
quiet=0
usage() {
	echo "usage: $0 [--variant default|debug] [--quiet]" >&2
	exit 2
}
while [ $# -gt 0 ]; do
	case $1 in
	--variant) [ $# -ge 2 ] || usage; variant=$2; shift 2 ;;
	--variant=*) variant=${1#*=}; shift ;;
	--quiet | -q) quiet=1; shift ;;
	*) usage ;;
	esac
done
case $variant in
default) fragments=(config/crvmm.config) ;;
debug) fragments=(config/crvmm.config config/debug.config) ;;
*) echo "kernel: unknown variant '$variant' (expected default or debug)" >&2; exit 2 ;;
esac

log() { if [ "$quiet" = 0 ]; then echo "kernel: $*" >&2; fi; }
warn() { echo "kernel: warning: $*" >&2; }
die() { echo "kernel: error: $*" >&2; exit 1; }

# shellcheck source-path=SCRIPTDIR source=source.env
. "$here/source.env"
tarball=$KERNEL_SOURCE_TARBALL

# ---- Build packages: install them (root, unless CRVMM_NO_INSTALL is set)
# or print the command that would.
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
		echo "kernel: missing packages: ${missing[*]}; install them with:" >&2
		echo "apt-get install -y ${missing[*]}" >&2
		exit 1
	fi
}
ensure_packages flex bison bc libelf-dev libssl-dev cpio xz-utils gcc make \
	"$KERNEL_SOURCE_PACKAGE"
[ -r "$tarball" ] || die "kernel source $tarball not found (package $KERNEL_SOURCE_PACKAGE)"

# ---- Inputs
patches=()
while read -r line || [ -n "$line" ]; do
	line=${line%%#*}
	line=${line//[[:space:]]/}
	[ -n "$line" ] || continue
	[ -f "$here/patches/$line" ] || die "patches/series lists $line, which does not exist"
	patches+=("$line")
done <"$here/patches/series"

gcc_version=$(gcc --version | sed -n 1p)

cache=${CRVMM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/crvmm}
mkdir -p "$cache/kernel" "$cache/kernel-src" "$cache/kernel-tree"
cache=$(cd -- "$cache" && pwd -P)

# Tarball sha256 and version, remembered per (path, device, inode, size, mtime).
tar_path=$(readlink -f -- "$tarball")
tar_stat=$(stat -L -c '%d:%i:%s:%Y' -- "$tar_path")
shadb="$cache/kernel-src/tarballs"
tar_sha='' kver=''
lookup_tarball() {
	local p s h v
	[ -f "$shadb" ] || return 0
	while IFS=$'\t' read -r p s h v; do
		if [ "$p" = "$tar_path" ] && [ "$s" = "$tar_stat" ]; then
			tar_sha=$h kver=$v
		fi
	done <"$shadb"
}
lookup_tarball

compute_key() {
	key_inputs=$(
		echo "crvmm guest kernel key v1"
		echo "variant $variant"
		echo "tarball-sha256 $tar_sha"
		echo "kernel-version $kver"
		echo "gcc $gcc_version"
		cd "$here" && sha256sum -- "${fragments[@]}" patches/series \
			"${patches[@]/#/patches/}" build.sh
	)
	key=$(sha256sum <<<"$key_inputs")
	key=${key%% *}
	out="$cache/kernel/$variant-${key:0:16}"
}

is_complete() {
	local f k=''
	for f in vmlinux bzImage config release key build.log; do
		[ -f "$out/$f" ] || return 1
	done
	read -r k <"$out/key" || true
	[ "$k" = "$key" ]
}

version_warning() {
	if [ "$kver" != "$KERNEL_TESTED_VERSION" ]; then
		warn "$tarball is Linux $kver, tested with $KERNEL_TESTED_VERSION (source.env); building anyway"
	fi
}

cache_hit() {
	local rel=''
	version_warning
	read -r rel <"$out/release" || true
	log "cached $variant kernel $rel"
	echo "$out"
	exit 0
}

if [ -n "$tar_sha" ]; then
	compute_key
	is_complete && cache_hit
fi

# ---- Past this point we build: one kernel build at a time on this machine.
exec 9>"$cache/kernel-tree/.lock"
if ! flock -n 9; then
	log "another kernel build holds $cache/kernel-tree/.lock; waiting"
	flock 9
fi
# Left behind by builds that were killed: nobody else can be using them now.
rm -rf "$cache"/kernel/.tmp-* "$cache"/kernel-src/.tmp-*

ensure_pristine() {
	src="$cache/kernel-src/${tar_sha:0:16}"
	[ -f "$src/Makefile" ] && return 0
	local tmp="$cache/kernel-src/.tmp-${tar_sha:0:16}.$$"
	log "unpacking $tarball into $src (once per tarball)"
	rm -rf "$src" "$tmp"
	mkdir -p "$tmp"
	tar -xf "$tar_path" -C "$tmp" --strip-components=1 --no-same-owner
	[ -f "$tmp/Makefile" ] || die "$tarball does not hold a kernel tree"
	mv -T "$tmp" "$src"
}

if [ -z "$tar_sha" ]; then
	log "hashing $tarball"
	tar_sha=$(sha256sum -- "$tar_path")
	tar_sha=${tar_sha%% *}
	ensure_pristine
	kver=$(awk -F' *= *' '
		$1 == "VERSION" { v = $2 } $1 == "PATCHLEVEL" { p = $2 }
		$1 == "SUBLEVEL" { s = $2 } $1 == "EXTRAVERSION" { e = $2 }
		/^NAME/ { exit }
		END { printf "%s.%s.%s%s", v, p, s, e }' "$src/Makefile")
	{
		[ -f "$shadb" ] && awk -F'\t' -v p="$tar_path" '$1 != p' "$shadb"
		printf '%s\t%s\t%s\t%s\n' "$tar_path" "$tar_stat" "$tar_sha" "$kver"
	} >"$shadb.tmp.$$"
	mv -f "$shadb.tmp.$$" "$shadb"
	compute_key
	is_complete && cache_hit
fi
version_warning
ensure_pristine

# ---- Build into a temporary sibling of the final directory.
start=$SECONDS
tmpout="$cache/kernel/.tmp-$variant-${key:0:16}.$$"
mkdir -p "$tmpout"
buildlog="$tmpout/build.log"
: >"$buildlog"
make_pid=''
cleanup() {
	# make passes SIGTERM on to its jobs and waits for them: wait for make
	# too, so that the tree is idle once this script (and its lock) is gone.
	if [ -n "$make_pid" ]; then
		kill "$make_pid" 2>/dev/null || true
		wait "$make_pid" 2>/dev/null || true
	fi
	rm -rf "$tmpout"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
	echo >&2
	echo "kernel: error: $*; last 40 lines of the build log:" >&2
	tail -n 40 "$buildlog" >&2 || true
	cp -f "$buildlog" "$cache/kernel/$variant-failed.log" 2>/dev/null || true
	echo "kernel: full log: $cache/kernel/$variant-failed.log" >&2
	exit 1
}

tree="$cache/kernel-tree/$variant"
tree_id=$({
	echo "$tar_sha"
	cd "$here/patches" && sha256sum -- series "${patches[@]}"
} | sha256sum)
tree_id=${tree_id%% *}
stamp="$tree/.crvmm-tree-id"
old_id=''
[ -f "$stamp" ] && read -r old_id <"$stamp"
if [ "$old_id" != "$tree_id" ]; then
	log "making a fresh build tree $tree (source or patches changed)"
	rm -rf "$tree"
	cp -a "$src" "$tree"
	for p in "${patches[@]}"; do
		echo "### patch -p1 < patches/$p" >>"$buildlog"
		patch -d "$tree" -p1 --batch --forward <"$here/patches/$p" >>"$buildlog" 2>&1 ||
			fail "patches/$p does not apply"
	done
	echo "$tree_id" >"$stamp"
else
	log "reusing build tree $tree"
fi

# Same environment for every build: no stray ARCH/O= from the caller, fixed
# build identity (uname -v) so that equal inputs give equal kernels.
unset ARCH SUBARCH CROSS_COMPILE KBUILD_OUTPUT KCONFIG_CONFIG MAKEFLAGS MFLAGS LLVM
export KBUILD_BUILD_TIMESTAMP='Thu Jan  1 00:00:00 UTC 1970'
export KBUILD_BUILD_USER=crvmm KBUILD_BUILD_HOST=crvmm KBUILD_BUILD_VERSION=1
export LC_ALL=C

frag_paths=("${fragments[@]/#/$here/}")
log "configuring: tinyconfig + ${fragments[*]}"
{
	echo "### make tinyconfig + merge_config.sh -m ${fragments[*]} + make olddefconfig"
	make -C "$tree" tinyconfig &&
		(cd "$tree" && scripts/kconfig/merge_config.sh -m .config "${frag_paths[@]}") &&
		make -C "$tree" olddefconfig
} >>"$buildlog" 2>&1 || fail "configuration failed"

# Every option the fragments set must have that value in the final .config
# (Kconfig silently drops options whose dependencies are not met). Later
# fragments override earlier ones.
if ! dropped=$(cat "${frag_paths[@]}" | awk '
	FNR == NR {
		if (/^CONFIG_[A-Za-z0-9_]+=/) { i = index($0, "="); want[substr($0, 1, i - 1)] = substr($0, i + 1) }
		else if (/^# CONFIG_[A-Za-z0-9_]+ is not set$/) want[$2] = "n"
		next
	}
	/^CONFIG_[A-Za-z0-9_]+=/ { i = index($0, "="); have[substr($0, 1, i - 1)] = substr($0, i + 1) }
	END {
		bad = 0
		for (k in want) {
			h = (k in have) ? have[k] : "n"
			if (h != want[k]) { printf "  %s: fragment says %s, .config has %s\n", k, want[k], h; bad = 1 }
		}
		exit bad
	}' - "$tree/.config" | sort); then
	echo "$dropped" >>"$buildlog"
	echo "kernel: error: options of ${fragments[*]} not in the final .config (missing dependencies?):" >&2
	echo "$dropped" >&2
	cp -f "$buildlog" "$cache/kernel/$variant-failed.log"
	exit 1
fi

jobs=$(nproc)
log "building $variant kernel ($kver, make -j$jobs vmlinux bzImage; log: $buildlog)"
echo "### make -j$jobs vmlinux bzImage" >>"$buildlog"
make -C "$tree" -j"$jobs" vmlinux bzImage >>"$buildlog" 2>&1 &
make_pid=$!

# Progress on stderr: in place on a terminal, one line per 15 s otherwise.
tty=0
[ -t 2 ] && tty=1
last=0
while kill -0 "$make_pid" 2>/dev/null; do
	sleep 1
	[ "$quiet" = 0 ] || continue
	el=$((SECONDS - start))
	if [ "$tty" = 1 ] || [ $((el - last)) -ge 15 ]; then
		last=$el
		n=$(grep -c '^  CC ' "$buildlog" || true)
		msg=$(printf 'kernel: building %dm%02ds, %d objects compiled' $((el / 60)) $((el % 60)) "$n")
		if [ "$tty" = 1 ]; then printf '\r\033[K%s' "$msg" >&2; else echo "$msg" >&2; fi
	fi
done
[ "$tty" = 1 ] && [ "$quiet" = 0 ] && echo >&2
rc=0
wait "$make_pid" || rc=$?
make_pid=''
[ "$rc" = 0 ] || fail "make failed (exit $rc)"

# ---- Publish.
cp "$tree/vmlinux" "$tmpout/vmlinux"
cp "$tree/arch/x86/boot/bzImage" "$tmpout/bzImage"
cp "$tree/.config" "$tmpout/config"
make -s -C "$tree" kernelrelease >"$tmpout/release"
printf '%s\n' "$key_inputs" >"$tmpout/inputs"
printf '%s\n' "$key" >"$tmpout/key"
warnings=$(grep -c 'warning:' "$buildlog" || true)
rm -rf "$out"
mv -T "$tmpout" "$out"
el=$((SECONDS - start))
log "built $(cat "$out/release") in $((el / 60))m$((el % 60))s, $warnings compiler warnings"
echo "$out"
