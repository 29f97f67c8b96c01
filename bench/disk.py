#!/usr/bin/env python3
"""virtio-blk from a test kernel against the same reads done natively (run by `make bench`, or
alone: bench/disk.py SWIFTVMM GUESTS).

A 64 MiB image of random bytes in out/bench (DISK_DIR). The guest (Guests/disk.c bench=N) times
N sequential 4 KiB reads, N at random 4 KiB-aligned offsets and N sequential 4 KiB writes with the
TSC, one request per notification (batch=1) and 16 per notification (batch=16). The native
reference reads the same offsets of the same file with os.preadv into one buffer (page cache,
Python's own call overhead included: a floor for what a syscall per request costs here). Exits
per request come from --stats: the run's vCPU exits less those of a run of one request per kind
(set-up and the TSC calibration), over the requests beyond those. Median of DISK_RUNS (3). Prints a Markdown table for docs/benchmarks.md.
"""
import os, re, statistics, subprocess, sys, time

binary, guests = sys.argv[1], sys.argv[2]
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
directory = os.environ.get("DISK_DIR", os.path.join(root, "out", "bench"))
runs = int(os.environ.get("DISK_RUNS", "3"))
requests = int(os.environ.get("DISK_REQUESTS", "20000"))
image = os.path.join(directory, "disk-bench.img")
size = 64 << 20

os.makedirs(directory, exist_ok=True)
with open(image, "wb") as f:
    f.write(os.urandom(size))


def run(arguments):
    result = subprocess.run([binary, "run", os.path.join(guests, "disk.elf"), "--disk", image, "--stats", "--memory", "256M",
                             "--cmdline", arguments], capture_output=True, text=True, timeout=600)
    if result.returncode != 1:
        sys.exit(f"disk bench: guest failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    exits = sum(int(m) for m in re.findall(r"vcpu\d+: exits=(\d+)", result.stderr))
    lines = {m.group(1): (int(m.group(2)), int(m.group(3))) for m in
             re.finditer(r"bench (\S+): \d+ requests in (\d+) ns, \d+ ns/request, \d+ KiB/s, (\d+) notifications", result.stdout)}
    return lines, exits


def native(kind):
    blocks = size // 4096
    fd = os.open(image, os.O_RDONLY)
    buffer = bytearray(4096)
    rng = 0x2545F4914F6CDD1D
    start = time.perf_counter_ns()
    for i in range(requests):
        if kind == "rand-read-4k":
            rng ^= (rng << 13) & 0xFFFFFFFFFFFFFFFF; rng ^= rng >> 7; rng ^= (rng << 17) & 0xFFFFFFFFFFFFFFFF
            block = rng % blocks
        else:
            block = i % blocks
        os.preadv(fd, [buffer], block * 4096)
    elapsed = time.perf_counter_ns() - start
    os.close(fd)
    return elapsed


baseline = min(run("bench=1 writes=1")[1] for _ in range(2))
rows = []
for batch in (1, 16):
    samples = {}
    exits = []
    for _ in range(runs):
        lines, total = run(f"bench={requests} batch={batch} writes=1")
        exits.append(total - baseline)
        for kind, (ns, notifications) in lines.items():
            samples.setdefault(kind, []).append((ns, notifications))
    per_request_exits = statistics.median(exits) / (4 * (requests - 1))
    for kind, values in samples.items():
        ns = statistics.median(v[0] for v in values)
        notifications = values[0][1]
        reference = statistics.median(native("seq-read-4k" if kind == "depth-read-4k" else kind) for _ in range(runs)) if kind != "seq-write-4k" else None
        rows.append((kind, batch, ns / requests, requests * 4096 / (ns / 1e9) / (1 << 20), notifications / requests,
                     per_request_exits, reference / requests if reference else None))

print(f"\n{requests} requests of 4 KiB per kind, median of {runs} runs, image {size >> 20} MiB (page cache)\n")
print("| kind | batch | guest us/request | guest MiB/s | notifications/request | exits/request (all kinds) | native us/request (os.preadv) | guest/native |")
print("|---|---|---|---|---|---|---|---|")
for kind, batch, ns, mibs, notes, exits, reference in rows:
    ratio = f"{ns / reference:.1f}" if reference else "-"
    native_text = f"{reference / 1000:.2f}" if reference else "-"
    print(f"| {kind} | {batch} | {ns / 1000:.2f} | {mibs:.0f} | {notes:.3f} | {exits:.2f} | {native_text} | {ratio} |")
os.remove(image)
