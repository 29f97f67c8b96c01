#!/usr/bin/env python3
"""Writes a newc cpio initramfs: /dev, /dev/console (the kernel opens it before /init, and
DEVTMPFS_MOUNT may be off), and /init from the given file.

usage: mkinitramfs.py INIT OUTPUT
"""
import sys


def entry(name, mode, data=b"", rdev=(0, 0), ino=[1000]):
    ino[0] += 1
    fields = [ino[0], mode, 0, 0, 2 if mode & 0o040000 else 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
    header = b"070701" + b"".join(b"%08x" % value for value in fields)
    blob = header + name.encode() + b"\0"
    blob += b"\0" * (-len(blob) % 4)
    blob += data + b"\0" * (-len(data) % 4)
    return blob


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    init = open(sys.argv[1], "rb").read()
    archive = entry("dev", 0o040755) + entry("dev/console", 0o020600, rdev=(5, 1))
    archive += entry("init", 0o100755, init) + entry("TRAILER!!!", 0)
    archive += b"\0" * (-len(archive) % 512)
    open(sys.argv[2], "wb").write(archive)


main()
