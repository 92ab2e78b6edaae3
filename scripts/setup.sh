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
  # The arm64 appliance image (without meshgate: no aarch64 Rust target here) and its boot test.
  qemu-system-arm u-boot-qemu binutils
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

# The arm64 appliance image: Debian's arm64 kernel, busybox and nft (with its libraries),
# unpacked into a sysroot cache; nothing of it is installed on the host.
ARM64_ROOT=${MESHGATE_ARM64_ROOT:-/var/cache/meshgate/arm64}
ARM64_PACKAGES=(busybox-static nftables libnftables1 libmnl0 libnftnl11 libjansson4 libgmp10
  libxtables12 libedit2 libbsd0 libmd0 libtinfo6 libc6)
if [ ! -f "$ARM64_ROOT/.unpacked" ]; then
  export DEBIAN_FRONTEND=noninteractive
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  apt-get update -qq
  pkg=$(apt-cache depends linux-image-arm64:arm64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  rm -rf "$ARM64_ROOT"
  mkdir -p "$ARM64_ROOT"
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq "$pkg" "${ARM64_PACKAGES[@]/%/:arm64}")
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$ARM64_ROOT"; done
  rm -rf "$tmp"
  echo "${pkg%:arm64} ${ARM64_PACKAGES[*]}" >"$ARM64_ROOT/.unpacked"
fi
