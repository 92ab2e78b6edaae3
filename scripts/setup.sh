#!/usr/bin/env bash
# Installs what meshgate's build, demo and tests need on Debian 12, idempotently, from Debian's
# archive only. Run as root. Safe to run again: packages already present are not reinstalled.
set -euo pipefail

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found: meshgate needs a Rust 1.95 toolchain (rustup) on PATH" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (it installs Debian packages; the labs need network namespaces)" >&2
  exit 1
fi

PACKAGES=(
  build-essential pkg-config
  iproute2 iputils-ping nftables kmod cpio
  wireguard-tools wireguard-go
  qemu-system-x86 busybox-static xz-utils miniupnpd
  clang llvm libbpf-dev iperf3
  syslinux syslinux-common mtools dosfstools e2fsprogs fdisk qemu-utils
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# miniupnpd is only run inside lab namespaces by the portmap tests; never as the host's daemon.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl disable --now miniupnpd.service >/dev/null 2>&1 || true
fi

# The VM lab boots Debian's stock kernel. Unpack the package into a cache instead of installing
# it, so the host's /boot and initramfs hooks are untouched.
KERNEL_CACHE=${MESHGATE_KERNEL_CACHE:-/var/cache/meshgate/kernel}
if [ ! -f "$KERNEL_CACHE/.unpacked" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  mkdir -p "$KERNEL_CACHE"
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq "$pkg")
  dpkg-deb -x "$tmp"/*.deb "$KERNEL_CACHE"
  rm -rf "$tmp"
  echo "$pkg" >"$KERNEL_CACHE/.unpacked"
fi
