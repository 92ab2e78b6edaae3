#!/usr/bin/env bash
# Builds meshgate's appliance disk image from Debian's packages and the meshgate binary:
#
#   bash appliance-image/build.sh [--meshgate PATH] [--out DIR] [--config FILE] [--arch ARCH]
#
# Output in DIR (default appliance-image/out): meshgate-appliance-ARCH.img (raw MBR disk),
# meshgate-appliance-ARCH.qcow2, and initrd.img (the root filesystem, also inside the image).
# ARCH x86_64 (default, syslinux) or arm64 (U-Boot distro boot; without --meshgate it has no
# meshgate, as this machine cannot build an aarch64 one: see README.md).
# Needs no loop devices or mounts: each partition is built as a file (mkfs.vfat + mtools,
# mke2fs -d) and written into the disk file at its offset. See README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

arch=x86_64
meshgate=""
out="$here/out"
config=""
kernel_cache=""
arm64_root=${MESHGATE_ARM64_ROOT:-/var/cache/meshgate/arm64}
# Fixed timestamps for everything packed, so that rebuilding from the same inputs gives the
# same initramfs and filesystems (see README for what still differs).
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
boot_mib=${MESHGATE_IMAGE_BOOT_MIB:-64}
state_mib=${MESHGATE_IMAGE_STATE_MIB:-128}

die() {
  echo "build.sh: $*" >&2
  exit 1
}

while (($#)); do
  case $1 in
  --meshgate) meshgate=$2; shift 2 ;;
  --out) out=$2; shift 2 ;;
  --config) config=$2; shift 2 ;;
  --arch) arch=$2; shift 2 ;;
  --kernel-cache) kernel_cache=$2; shift 2 ;;
  -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
  *) die "unknown argument $1 (see --help)" ;;
  esac
done

case $arch in
x86_64 | amd64)
  arch=x86_64
  sysroot=/
  ld_so=/lib64/ld-linux-x86-64.so.2
  elf_machine="X86-64"
  console=ttyS0,115200n8
  kernel_cache=${kernel_cache:-${MESHGATE_KERNEL_CACHE:-/var/cache/meshgate/kernel}}
  arch_modules=()
  ;;
arm64 | aarch64)
  # Debian's arm64 kernel, busybox and nft, unpacked by scripts/setup.sh into a sysroot.
  arch=arm64
  sysroot=$arm64_root
  ld_so=/lib/ld-linux-aarch64.so.1
  elf_machine="AArch64"
  console=ttyAMA0,115200n8
  kernel_cache=${kernel_cache:-$arm64_root}
  arch_modules=("$here/modules.arm64.txt")
  [ -f "$sysroot/.unpacked" ] || die "no arm64 sysroot in $sysroot: run scripts/setup.sh as root"
  ;;
*) die "unknown --arch $arch (x86_64 or arm64)" ;;
esac
need() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || die "$tool not found: run scripts/setup.sh as root"
  done
}
need busybox cpio gzip xz modprobe depmod mkfs.vfat mcopy mke2fs debugfs sfdisk qemu-img readelf
if [ "$arch" = x86_64 ]; then
  need syslinux
  mbr_bin=/usr/lib/syslinux/mbr/mbr.bin
  [ -f "$mbr_bin" ] || die "$mbr_bin missing: install syslinux-common (scripts/setup.sh)"
  busybox=$(command -v busybox)
else
  busybox=$sysroot/bin/busybox
fi
readelf -h "$busybox" | grep -q "Machine:.*$elf_machine" || die "$busybox is not an $arch binary"
readelf -d "$busybox" 2>/dev/null | grep -q NEEDED && die "$busybox is not static (busybox-static)"

# --- inputs -------------------------------------------------------------------------------
if [ -z "$meshgate" ] && [ "$arch" = arm64 ]; then
  echo "build.sh: warning: no --meshgate for arm64 (this machine has no aarch64 Rust target):" \
    "the image boots, loads WireGuard and nftables, and says meshgate is missing" >&2
elif [ -z "$meshgate" ]; then
  target_dir=${CARGO_TARGET_DIR:-$repo/target}
  build=(cargo build --profile appliance -p meshgate --no-default-features -j2)
  echo "build.sh: building meshgate (${build[*]})" >&2
  (cd "$repo" && "${build[@]}" >&2)
  meshgate=$target_dir/appliance/meshgate
fi
if [ -n "$meshgate" ]; then
  [ -x "$meshgate" ] || die "meshgate binary $meshgate not found or not executable"
  readelf -h "$meshgate" | grep -q "Machine:.*$elf_machine" || die "$meshgate is not an $arch binary"
fi

vmlinuz=$(ls -1 "$kernel_cache"/boot/vmlinuz-* 2>/dev/null | sort -V | tail -n1)
[ -n "$vmlinuz" ] || die "no kernel in $kernel_cache/boot: run scripts/setup.sh as root"
kver=${vmlinuz##*/vmlinuz-}
moddir=$kernel_cache/lib/modules/$kver
[ -d "$moddir/kernel" ] || die "no modules for $kver in $moddir"

work=$(mktemp -d "${TMPDIR:-/tmp}/meshgate-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib/modules,etc,proc,sys,dev,run,tmp,boot,state,root,var}
mkdir -p "$root/usr/share/udhcpc"
ln -s ../run "$root/var/run"
ln -s ../tmp "$root/var/tmp"

# --- kernel modules -----------------------------------------------------------------------
# Resolved against a depmod index written into the scratch dir (Debian's package ships none),
# with the host's /etc/modprobe.d ignored (-C /dev/null).
dep_root=$work/depmod
mkdir -p "$dep_root/lib/modules/$kver"
ln -s "$moddir/kernel" "$dep_root/lib/modules/$kver/kernel"
for f in modules.order modules.builtin modules.builtin.modinfo; do
  [ -f "$moddir/$f" ] && cp "$moddir/$f" "$dep_root/lib/modules/$kver/"
done
depmod -b "$dep_root" "$kver"
: >"$work/modules.order"
while read -r module _; do
  case $module in '' | '#'*) continue ;; esac
  if ! deps=$(modprobe -C /dev/null -d "$dep_root" -S "$kver" --show-depends "$module" 2>&1); then
    echo "build.sh: warning: module $module: $deps" >&2
    continue
  fi
  while read -r kind path _; do
    [ "$kind" = insmod ] || continue
    name=${path##*/}
    name=${name%.ko*}
    grep -qx "$name" "$work/modules.order" && continue
    echo "$name" >>"$work/modules.order"
    case $path in
    *.ko.xz) xz -dc "$path" >"$root/lib/modules/$name.ko" ;;
    *.ko.zst) zstd -qdc "$path" >"$root/lib/modules/$name.ko" ;;
    *.ko.gz) gzip -dc "$path" >"$root/lib/modules/$name.ko" ;;
    *) cp "$path" "$root/lib/modules/$name.ko" ;;
    esac
  done <<<"$deps"
done < <(cat "$here/modules.txt" "${arch_modules[@]}")
cp "$work/modules.order" "$root/etc/modules.order"

# --- userland -----------------------------------------------------------------------------
cp "$busybox" "$root/bin/busybox"
# Every applet as a link, in bin/ (the rest of the system calls them by name on PATH). The
# names come from the host's busybox (the same Debian version): an arm64 one cannot run here.
for applet in $(busybox --list); do
  case $applet in busybox) continue ;; esac
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
ln -sf ../bin/busybox "$root/sbin/init"

# PROGRAM DEST: the program and, transitively, the shared libraries its ELF header names
# (readelf, so that it works for another architecture's programs), from the sysroot.
copy_with_libs() {
  install -m 0755 "$1" "$root$2"
  local lib path
  for lib in $(readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    path=""
    for dir in /lib/$multiarch /usr/lib/$multiarch /lib64 /lib; do
      [ -e "$sysroot$dir/$lib" ] && path=$dir/$lib && break
    done
    [ -n "$path" ] || die "$lib (needed by $1) not found in $sysroot"
    [ -e "$root$path" ] && continue
    mkdir -p "$root$(dirname "$path")"
    copy_with_libs "$(readlink -f "$sysroot$path")" "$path"
  done
}
multiarch=$([ "$arch" = x86_64 ] && echo x86_64-linux-gnu || echo aarch64-linux-gnu)
[ -n "$meshgate" ] && copy_with_libs "$meshgate" /usr/bin/meshgate
copy_with_libs "$sysroot/usr/sbin/nft" /usr/sbin/nft
mkdir -p "$root$(dirname "$ld_so")"
[ -e "$root$ld_so" ] || install -m 0755 "$(readlink -f "$sysroot$ld_so")" "$root$ld_so"
[ -n "$meshgate" ] && { strip --strip-unneeded "$root"/usr/bin/meshgate 2>/dev/null || true; }

cp -a "$here/rootfs/." "$root/"
chmod 0755 "$root/init" "$root"/usr/sbin/meshgate-* "$root/usr/share/udhcpc/default.script"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
{
  echo "kernel=$kver"
  echo "arch=$arch"
  [ -n "$meshgate" ] && echo "meshgate_sha256=$(sha256sum <"$meshgate" | cut -d' ' -f1)"
  echo "source_date_epoch=$SOURCE_DATE_EPOCH"
} >"$root/etc/meshgate-image"

# --- initramfs (the root filesystem) --------------------------------------------------------
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
  cpio --quiet -o -H newc --reproducible -R 0:0) | gzip -n -9 >"$work/initrd.img"

# --- p1: FAT boot/config partition ----------------------------------------------------------
boot=$work/boot.img
rm -f "$boot"
mkfs.vfat -n MGBOOT --invariant -C "$boot" $((boot_mib * 1024)) >/dev/null
export MTOOLS_SKIP_CHECK=1
# syslinux (x86_64) and U-Boot's distro boot (arm64, extlinux/extlinux.conf on the bootable
# partition; the device tree comes from U-Boot or qemu's virt machine) read the same format.
if [ "$arch" = x86_64 ]; then
  loader_cfg=syslinux.cfg
  printf 'SERIAL 0 115200\nPROMPT 0\n' >"$work/$loader_cfg"
else
  loader_cfg=extlinux.conf
  : >"$work/$loader_cfg"
fi
cat >>"$work/$loader_cfg" <<EOF
DEFAULT meshgate
TIMEOUT 0
LABEL meshgate
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND console=tty0 console=$console loglevel=4 panic=10
EOF
if [ -z "$config" ]; then
  for c in "$repo/configs/appliance.conf" "$repo/configs/meshgate.conf"; do
    [ -f "$c" ] && config=$c && break
  done
fi
if [ -n "$config" ]; then
  cp "$config" "$work/meshgate.conf"
else
  cat >"$work/meshgate.conf" <<'EOF'
# meshgate appliance configuration: edit, then boot. `key = value`, `#` comments.
# Kernel command line words meshgate.<key>=<value> override these.
#login_server = https://login.example.com
#auth_key = mgkey-...
#hostname = office-gw
#advertise_routes = 192.168.1.0/24
#advertise_exit_node = false
#accept_routes = false
#lan_interface = eth1
#lan_address = 192.168.1.1/24
#uplink_interface = eth0
#uplink_address = dhcp
#uplink_gateway =
EOF
fi
cp "$vmlinuz" "$work/vmlinuz"
for f in $loader_cfg meshgate.conf vmlinuz initrd.img; do
  touch -d "@$SOURCE_DATE_EPOCH" "$work/$f"
done
if [ "$arch" = x86_64 ]; then
  for f in syslinux.cfg meshgate.conf vmlinuz initrd.img; do mcopy -m -i "$boot" "$work/$f" "::/$f"; done
  syslinux --install "$boot"
else
  for f in meshgate.conf vmlinuz initrd.img; do mcopy -m -i "$boot" "$work/$f" "::/$f"; done
  mmd -i "$boot" ::/extlinux
  mcopy -m -i "$boot" "$work/extlinux.conf" ::/extlinux/extlinux.conf
fi

# --- p2: ext4 state partition ---------------------------------------------------------------
state_dir=$work/state
mkdir -p "$state_dir/bin" "$state_dir/log" "$state_dir/meshgate"
find "$state_dir" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
state=$work/state.img
rm -f "$state"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mke2fs -q -t ext4 -L MGSTATE \
  -U 4d475354-4154-4500-8000-000000000001 \
  -E root_owner=0:0,hash_seed=4d475354-4154-4500-8000-000000000002 \
  -d "$state_dir" "$state" "${state_mib}M"
# mke2fs -d copies each directory's ctime, which no tool can set on the source; fix it here.
for d in / /bin /log /meshgate; do
  E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH debugfs -w -R "sif $d ctime @$SOURCE_DATE_EPOCH" \
    "$state" >/dev/null 2>&1 || die "debugfs: cannot set the ctime of $d"
done

# --- the disk: MBR, p1 at 1 MiB (bootable), p2 after it --------------------------------------
disk=$work/disk.img
total_mib=$((1 + boot_mib + state_mib))
truncate -s "${total_mib}M" "$disk"
sfdisk -q --no-reread --no-tell-kernel "$disk" <<EOF
label: dos
label-id: 0x4d474154
start=2048, size=$((boot_mib * 2048)), type=c, bootable
start=$((2048 + boot_mib * 2048)), size=$((state_mib * 2048)), type=83
EOF
[ "$arch" = x86_64 ] && dd if="$mbr_bin" of="$disk" bs=440 count=1 conv=notrunc status=none
dd if="$boot" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$state" of="$disk" bs=1M seek=$((1 + boot_mib)) conv=notrunc,sparse status=none

mkdir -p "$out"
name=meshgate-appliance-$arch
mv "$disk" "$out/$name.img.tmp"
mv "$out/$name.img.tmp" "$out/$name.img"
qemu-img convert -f raw -O qcow2 "$out/$name.img" "$out/$name.qcow2.tmp"
mv "$out/$name.qcow2.tmp" "$out/$name.qcow2"
cp "$work/initrd.img" "$out/initrd.img"
echo "build.sh: $out/$name.img ($total_mib MiB, kernel $kver, initramfs $(($(stat -c %s "$out/initrd.img") / 1024)) KiB)" >&2
