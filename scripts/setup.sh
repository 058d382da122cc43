#!/usr/bin/env bash
# Installs what crvmm needs on a Debian 12 host, skipping what is there:
#   Debian packages: QEMU, busybox-static, the kernel source and its build tools
#   crates.io:       vhost-device-vsock (the QEMU engine's vsock backend)
# As root it installs; otherwise it prints the commands to run and fails.
set -euo pipefail

packages=(qemu-system-x86 busybox-static libzstd-dev linux-source-6.12 flex bison bc libelf-dev
	libssl-dev cpio xz-utils gzip zstd make gcc)
vhost_version=0.3.0

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "setup: missing packages; run: sudo apt-get install -y ${missing[*]}" >&2
		exit 1
	fi
	echo "setup: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	apt-get install -y -q "${missing[@]}" >/dev/null
fi

cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
if ! "$cargo_bin/vhost-device-vsock" --version 2>/dev/null | grep -q "$vhost_version"; then
	echo "setup: installing vhost-device-vsock $vhost_version from crates.io (about a minute)" >&2
	cargo install --quiet --locked vhost-device-vsock --version "$vhost_version"
fi
echo "setup: host ready (qemu $(qemu-system-x86_64 --version | head -n1 | awk '{print $4}'), vhost-device-vsock $vhost_version)" >&2
