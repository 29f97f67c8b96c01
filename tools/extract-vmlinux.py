#!/usr/bin/env python3
"""Extracts the uncompressed vmlinux (ELF) from a bzImage: the setup header's payload_offset and
payload_length locate the compressed kernel inside the protected-mode part; its magic names the
compressor (gzip and xz here; lz4, zstd, bzip2, lzma, lzo through their Debian tools).

usage: extract-vmlinux.py BZIMAGE OUTPUT
"""
import gzip, lzma, struct, subprocess, sys


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    image = open(sys.argv[1], "rb").read()
    if len(image) < 0x250 or image[0x202:0x206] != b"HdrS":
        sys.exit(f"{sys.argv[1]}: not a bzImage (no HdrS setup header)")
    setup_sects = image[0x1F1] or 4
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = (setup_sects + 1) * 512 + offset
    payload = image[start:start + length]
    if len(payload) != length or length == 0:
        sys.exit(f"{sys.argv[1]}: payload outside the image (truncated?)")
    if payload.startswith(b"\x1f\x8b"):
        data = gzip.decompress(payload)
    elif payload.startswith(b"\xfd7zXZ"):
        data = lzma.decompress(payload)
    else:
        tools = {b"\x02\x21\x4c\x18": ["lz4", "-dc"], b"\x28\xb5\x2f\xfd": ["zstd", "-dcq"],
                 b"BZh": ["bzip2", "-dc"], b"\x5d\x00": ["lzma", "-dc"], b"\x89LZO": ["lzop", "-dc"]}
        command = next((tool for magic, tool in tools.items() if payload.startswith(magic)), None)
        if command is None:
            sys.exit(f"{sys.argv[1]}: unknown payload compression {payload[:4].hex()}")
        # The payload may carry trailing bytes (the uncompressed size); the tools stop at the end of the stream.
        result = subprocess.run(command, input=payload, capture_output=True)
        data = result.stdout
        if not data.startswith(b"\x7fELF"):
            sys.exit(f"{sys.argv[1]}: {command[0]} failed: {result.stderr.decode(errors='replace').strip()}")
    if not data.startswith(b"\x7fELF"):
        sys.exit(f"{sys.argv[1]}: the payload is not an ELF kernel")
    open(sys.argv[2], "wb").write(data)


main()
