#!/usr/bin/env bash
# Builds the small Linux guest (make linux-small): a kernel from Debian's linux-source package
# configured by Guests/linux/small.config over allnoconfig, and an initramfs holding
# Guests/linux/init.S. The kernel is cached under $SWIFTVMM_CACHE (default ~/.cache/swiftvmm),
# keyed by the fragment, the source package's version and the compiler, so it is rebuilt only
# when one of them changes. Output: OUT/vmlinux, OUT/initrd.cpio, OUT/build-time.txt.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:?usage: linux-small.sh OUTPUT_DIR}"
fragment="$root/Guests/linux/small.config"
cache="${SWIFTVMM_CACHE:-$HOME/.cache/swiftvmm}"
mkdir -p "$out" "$cache"

# Build tools a fresh machine lacks (Debian package names).
need=()
# mkfs.ext2: the root file system test-linux makes for the small kernel.
for pair in gcc:gcc make:make flex:flex bison:bison bc:bc cpio:cpio xz:xz-utils python3:python3 perl:perl mkfs.ext2:e2fsprogs; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
[ -e /usr/include/libelf.h ] || need+=(libelf-dev)
[ -e /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
if [ ${#need[@]} -gt 0 ]; then
    echo "linux-small: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Debian's linux-source metapackage names the versioned source package (linux-source-6.1).
package="$(apt-cache depends linux-source 2>/dev/null | awk '/Depends: linux-source-/ {print $2; exit}')"
if [ -z "$package" ]; then
    apt-get update -qq
    package="$(apt-cache depends linux-source | awk '/Depends: linux-source-/ {print $2; exit}')"
fi
version="$(apt-cache policy "$package" | awk '/Candidate:/ {print $2}')"
key="$(cat "$fragment" <(echo "$package $version") <(gcc --version | head -n 1) | sha256sum | cut -c1-16)"
kernel="$cache/linux-small-$key"

if [ ! -s "$kernel/vmlinux" ]; then
    work="$cache/build-$key"
    rm -rf "$work" && mkdir -p "$work"
    echo "linux-small: building $package $version (config $key) in $work"
    start=$(date +%s)
    (cd "$work" && apt-get download "$package" >/dev/null 2>&1 && dpkg-deb -x ./*.deb pkg)
    tar -xaf "$work"/pkg/usr/src/"$package".tar.xz -C "$work"
    src="$work/$package"
    make -s -C "$src" ARCH=x86_64 allnoconfig KCONFIG_ALLCONFIG="$fragment"
    # Every line of the fragment must have taken: Kconfig drops what it cannot satisfy silently.
    while IFS= read -r line; do
        case "$line" in CONFIG_*=n) grep -q "^${line%%=*}=" "$src/.config" && { echo "linux-small: $line did not take"; exit 1; } ;;
                        CONFIG_*) grep -qx "$line" "$src/.config" || { echo "linux-small: $line did not take"; exit 1; } ;; esac
    done < "$fragment"
    make -s -C "$src" ARCH=x86_64 -j"$(nproc)" vmlinux
    seconds=$(( $(date +%s) - start ))
    mkdir -p "$kernel.tmp"
    cp "$src/vmlinux" "$src/.config" "$kernel.tmp/"
    echo "$package $version: download, configure and build in ${seconds} s on $(nproc) CPUs ($(date -u +%F))" > "$kernel.tmp/build-time.txt"
    rm -rf "$kernel" && mv "$kernel.tmp" "$kernel"
    rm -rf "$work"
fi
cp "$kernel/vmlinux" "$kernel/build-time.txt" "$out/"
cp "$kernel/.config" "$out/config"
gcc -nostdlib -static -no-pie -Wl,--build-id=none -o "$out/init" "$root/Guests/linux/init.S"
python3 "$root/tools/mkinitramfs.py" "$out/init" "$out/initrd.cpio"
echo "linux-small: $out/vmlinux ($(cat "$out/build-time.txt"))"
