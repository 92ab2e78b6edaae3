#!/bin/sh
# PID 1 of the meshgate VM lab, packed into the initramfs by src/initramfs.rs.
# Boots into a read-only view of the host's root filesystem (9p tag hostroot), runs the
# scenario the host wrote into the control share (tag vmlabctl), reports its exit status on
# the console and in the control share, and powers off.

# Debian's busybox shell runs its applets through /proc/self/exe, so /proc comes first and by
# full path; after that the applets need no links.
/bin/busybox mount -t proc proc /proc
export PATH=/bin

say() { echo "vmlab-init: $*"; }
die() {
    say "$*"
    echo "MESHGATE-VMLAB-INIT-FAILED $*"
    sync
    poweroff -f
}
mnt() { mount "$@" || die "mount $*"; }

mnt -t sysfs sysfs /sys
mnt -t devtmpfs devtmpfs /dev

# A module that fails to load is reported and the boot goes on, so only the scenarios that
# need it fail.
while read -r module; do
    insmod "/lib/modules/$module.ko" || say "insmod $module failed"
done </etc/vmlab-modules

p9=trans=virtio,version=9p2000.L,msize=262144
# cache=loose: nothing changes the host's files under a running scenario that it could see
# change, and exec of large test binaries over 9p is much faster with the page cache.
mnt -t 9p -o "$p9,ro,cache=loose" hostroot /host
mnt -t 9p -o "$p9" vmlabctl /ctl
read -r run_id </ctl/run-id || die "no run id in the control share"

# Fresh kernel filesystems and scratch space over the host's directories. They live in the
# VM only: the host root is mounted read-only and nothing here writes through to it.
mnt -t proc proc /host/proc
mnt -t sysfs sysfs /host/sys
mnt -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mnt -t devpts devpts /host/dev/pts
mnt -t tmpfs -o mode=1777 tmpfs /host/dev/shm
# devtmpfs lacks the links udev makes; bash process substitution needs /dev/fd.
ln -sf /proc/self/fd /host/dev/fd
ln -sf /proc/self/fd/0 /host/dev/stdin
ln -sf /proc/self/fd/1 /host/dev/stdout
ln -sf /proc/self/fd/2 /host/dev/stderr
mnt -t bpf bpf /host/sys/fs/bpf
mnt -t cgroup2 cgroup2 /host/sys/fs/cgroup
mount -t tracefs tracefs /host/sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /host/sys/kernel/debug 2>/dev/null
mnt -t tmpfs -o mode=1777 tmpfs /host/tmp
mnt -t tmpfs -o mode=755 tmpfs /host/run
mnt -t tmpfs -o mode=700 tmpfs /host/root
[ -d /host/var/tmp ] && mnt -t tmpfs -o mode=1777 tmpfs /host/var/tmp
mkdir -p /host/run/vmlab
mnt -t 9p -o "$p9" vmlabshare /host/run/vmlab
# Host directories the scenario needs from under the scratch mounts (a checkout in /tmp, say),
# read-only at their own paths; /ctl/expose lists "tag path" lines.
while read -r tag path; do
    mkdir -p "/host$path" || die "mkdir $path"
    mnt -t 9p -o "$p9,ro,cache=loose" "$tag" "/host$path"
done </ctl/expose
cp /ctl/scenario.sh /host/run/vmlab-scenario.sh || die "cannot copy the scenario"

ip link set lo up
hostname vmlab

echo "MESHGATE-VMLAB-START $run_id"
# The scenario writes into a pipe rather than the console: without a tty, programs print no
# colour codes and buffer as they do under CI. Daemons it leaves behind may hold the pipe
# open, so the copier gets two seconds after the scenario ends, then goes.
mkfifo /scenario-output
cat /scenario-output &
cat_pid=$!
chroot /host /usr/bin/env -i /bin/sh /run/vmlab-scenario.sh </dev/null >/scenario-output 2>&1 &
wait $!
rc=$?
(sleep 2; kill "$cat_pid" 2>/dev/null) &
wait "$cat_pid"

echo
echo "MESHGATE-VMLAB-EXIT $run_id $rc"
echo "$rc" >/ctl/exit-code
sync
poweroff -f
