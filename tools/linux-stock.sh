#!/usr/bin/env bash
# Fetches the stock Linux guest (make linux-stock): Debian's cloud kernel via `apt-get download`
# (extracted, never installed into the host's /boot), its vmlinux taken out of the bzImage (no
# in-guest decompression), and a busybox-static initramfs.
# Output: OUT/vmlinuz, OUT/vmlinux, OUT/initrd.cpio, OUT/version.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:?usage: linux-stock.sh OUTPUT_DIR}"
mkdir -p "$out"
command -v lz4 >/dev/null 2>&1 || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq lz4 >/dev/null; }

# linux-image-cloud-amd64 is a metapackage: it depends on the current versioned image.
image="$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
if [ -z "$image" ]; then
    apt-get update -qq
    image="$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
fi
if [ "$(cat "$out/version" 2>/dev/null)" != "$image" ] || [ ! -s "$out/vmlinux" ] || [ ! -s "$out/initrd.cpio" ]; then
    work="$out/work"
    rm -rf "$work" && mkdir -p "$work"
    (cd "$work" && apt-get download "$image" busybox-static >/dev/null 2>&1)
    for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
    cp "$work"/root/boot/vmlinuz-* "$out/vmlinuz"
    python3 "$root/tools/extract-vmlinux.py" "$out/vmlinuz" "$out/vmlinux"
    python3 "$root/tools/mkinitramfs.py" "$work/root/bin/busybox" "$out/initrd.cpio"
    echo "$image" > "$out/version"
    rm -rf "$work"
fi
echo "linux-stock: $image in $out"
