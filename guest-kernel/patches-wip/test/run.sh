#!/usr/bin/env bash
# Boot a kernel built with patches-wip/ under QEMU TCG and run cr-test.sh in
# it: checkpoint/restart of resources/programs/cr_target.c from a file,
# through a pipe and gzip, checkpoint-then-thaw, and the negative cases.
#
#   guest-kernel/patches-wip/test/run.sh <vmlinux> [test-script]
#
# Builds a throwaway busybox initramfs in a temporary directory (the test
# programs compiled like resources/build-initramfs.sh does) and prints the
# guest console. Needs busybox-static, gcc, cpio, qemu-system-x86.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
root=$(cd -- "$here/../../.." && pwd -P)
vmlinux=${1:?usage: run.sh <vmlinux> [test-script]}
script=${2:-$here/cr-test.sh}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ir=$tmp/ir
mkdir -p "$ir"/{bin,dev,proc,sys,tmp,etc,root}
cp /bin/busybox "$ir/bin/"
for p in cr_target cr_dump cr_restart cr_mangle; do
	gcc -static -O2 -Wall -Werror -s -Wl,--build-id=none \
		-o "$ir/bin/$p" "$root/resources/programs/$p.c"
done
cp "$script" "$ir/test.sh"
cat >"$ir/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /tmp
mkdir -p /sys/fs/cgroup
mount -t cgroup2 none /sys/fs/cgroup
echo "=== test start $(cut -d' ' -f1 /proc/uptime)"
sh /test.sh 2>&1
echo "=== test end $(cut -d' ' -f1 /proc/uptime)"
reboot -f
INIT
chmod +x "$ir/init"
printf 'root:x:0:0:root:/root:/bin/sh\nu:x:1000:1000::/tmp:/bin/sh\n' >"$ir/etc/passwd"
printf 'root:x:0:\nu:x:1000:\n' >"$ir/etc/group"
(cd "$ir" && find . | cpio -o -H newc --quiet | gzip -1) >"$tmp/test.cpio.gz"
timeout 1500 qemu-system-x86_64 -M microvm,x-option-roms=off,rtc=off,acpi=off -accel tcg \
	-cpu max -m 768 -smp 2 -nodefaults -no-user-config -display none \
	-serial stdio -kernel "$vmlinux" -initrd "$tmp/test.cpio.gz" \
	-append "console=ttyS0 reboot=t panic=-1 quiet" -no-reboot
