#!/bin/sh
# Stage-1 C/R test suite (guest side). Run as root from /init.
CG=/sys/fs/cgroup
mkdir $CG/t $CG/t2 $CG/t3
now() { cut -d' ' -f1 /proc/uptime; }
start_target() { # dir MiB cgroup [threads]
	sh -c "echo \$\$ > $3/cgroup.procs; exec cr_target $1 $2 $4" >/dev/null &
	sleep 3
	pidof cr_target | tr ' ' '\n' | while read p; do grep -q "$1" /proc/$p/cmdline && echo $p; done | head -n1
}
verify() { # dir -> prints verdict of the (single) cr_target using dir
	rm -f $1/verdict
	p=$(pidof cr_target | tr ' ' '\n' | while read q; do grep -q "$1" /proc/$q/cmdline && echo $q; done | head -n1)
	kill -USR1 $p; sleep 1.5
	echo "verify $1 pid $p: $(cat $1/verdict) ($(cat $1/state))"
}
result() { echo "RESULT $1: $2"; }

echo "--- 1. checkpoint 64 MiB, kill, restart from a file"
pid=$(start_target /tmp/a 64 $CG/t)
echo "target pid $pid, $(cat /tmp/a/state)"
cr_dump -k $pid $CG/t /tmp/img64
echo "before restart: $(cat /tmp/a/state)"
t0=$(now); cr_restart /tmp/img64 &
# Restored once a live cr_target has /tmp/a in its (restored) arguments.
until [ -n "$(pidof cr_target | tr ' ' '\n' | while read q; do grep -q /tmp/a /proc/$q/cmdline 2>/dev/null && echo $q; done)" ]; do
	sleep 0.1
done
sleep 1; echo "restored after $(echo "$(now) $t0" | awk '{print $1 - $2}') s (polled): $(cat /tmp/a/state)"
verify /tmp/a
sleep 1; echo "later: $(cat /tmp/a/state)"
ls -l /tmp/img64

echo "--- 2. checkpoint then thaw: the original runs on unchanged"
pid=$(start_target /tmp/b 8 $CG/t2)
cr_dump $pid $CG/t2 /tmp/imgb
sleep 0.5; verify /tmp/b

echo "--- 3. the restarted process, checkpointed again, through a pipe"
p=$(pidof cr_target | tr ' ' '\n' | while read q; do grep -q /tmp/a /proc/$q/cmdline && echo $q; done)
echo $p > $CG/t3/cgroup.procs
rm -f /tmp/done; (cr_dump -k $p $CG/t3 -; echo > /tmp/done) | cr_restart - &
while [ ! -e /tmp/done ]; do sleep 0.2; done; sleep 1
verify /tmp/a

echo "--- 4. through a pipe and gzip | gunzip"
p=$(pidof cr_target | tr ' ' '\n' | while read q; do grep -q /tmp/a /proc/$q/cmdline && echo $q; done)
echo $p > $CG/t3/cgroup.procs
rm -f /tmp/done; (cr_dump -k $p $CG/t3 -; echo > /tmp/done) | gzip -1 | gunzip | cr_restart - &
while [ ! -e /tmp/done ]; do sleep 0.2; done; sleep 1
verify /tmp/a

echo "--- 5. negative: checkpoint"
pid=$(pidof cr_target | tr ' ' '\n' | while read q; do grep -q /tmp/b /proc/$q/cmdline && echo $q; done)
cr_dump -n $pid $CG/t2 /tmp/x; echo "exit $?"
cr_dump -u 1000 $pid $CG/t2 /tmp/x; echo "exit $?"
cr_dump 99999 $CG/t2 /tmp/x; echo "exit $?"
pidt=$(start_target /tmp/c 1 $CG/t threads)
cr_dump $pidt $CG/t /tmp/x; echo "exit $?"
kill -9 $pidt
verify /tmp/b

echo "--- 6. negative: restart"
neg() { # name, cr_mangle args...
	name=$1; shift
	cr_mangle /tmp/imgb /tmp/bad "$@" >/dev/null || echo "mangle failed"
	echo "[$name]"; cr_restart /tmp/bad; echo "exit $?"
}
neg magic 1 0 0 8 0x1234
neg version 1 0 8 4 2
neg arch 1 0 12 4 7
neg release 1 0 48 1 0x58
neg confighash 1 0 24 8 1
neg vma-kernel 8 0 8 8 0xffff888000000000
neg vma-prot 8 0 24 4 0x80
neg absurd-len 3 0 -4 4 0xffffffff
neg absurd-ngroups 3 0 36 4 0x7fffffff
neg rip-kernel 5 0 128 8 0xffffffff81000000
neg page-count 9 0 0 4 100000
neg page-addr 9 0 8 8 0xffff888000000000
neg flipped-page-byte 9 1 4000 1 0x55
head -c 2000 /tmp/imgb > /tmp/bad; echo "[truncated-early]"; cr_restart /tmp/bad; echo "exit $?"
head -c 5000000 /tmp/imgb > /tmp/bad; echo "[truncated-late]"; cr_restart /tmp/bad; echo "exit $?"
: > /tmp/empty; echo "[empty]"; cr_restart /tmp/empty; echo "exit $?"
verify /tmp/b

echo "--- 7. timing: full restart of 64 MiB (trailer checksum damaged, so it is killed at the end)"
cr_mangle /tmp/img64 /tmp/bad 11 0 16 4 0 >/dev/null
t0=$(now); cr_restart /tmp/bad 2>/dev/null; t1=$(now); echo "restart 64 MiB: $t0 -> $t1"
rm /tmp/bad
cr_mangle /tmp/imgb /tmp/bad 11 0 16 4 0 >/dev/null
t0=$(now); cr_restart /tmp/bad 2>/dev/null; t1=$(now); echo "restart 8 MiB: $t0 -> $t1"
ls -l /tmp/imgb /tmp/img64
grep -E "MemFree|MemTotal" /proc/meminfo

echo "--- 8. kernel reports"
if [ -d /sys/kernel/debug ]; then
	mount -t debugfs none /sys/kernel/debug 2>/dev/null
	if [ -e /sys/kernel/debug/kmemleak ]; then
		echo scan > /sys/kernel/debug/kmemleak; sleep 6
		echo scan > /sys/kernel/debug/kmemleak
		echo "kmemleak: $(grep -c unreferenced /sys/kernel/debug/kmemleak) unreferenced objects"
		head -60 /sys/kernel/debug/kmemleak
	fi
fi
dmesg | grep -E -i -A20 "kasan|BUG:|WARNING:|lockdep|circular|leak" | head -80
echo "dmesg problems: $(dmesg | grep -E -c -i 'kasan|BUG:|WARNING:')"
