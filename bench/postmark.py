#!/usr/bin/env python3
"""PostMark-style workload natively and as a swiftvmm guest over --share (run by `make bench`, or
alone: bench/postmark.py SWIFTVMM GUESTS).

The same source (Guests/postmark/postmark.c) built twice: out/native/postmark and
out/guests/postmark.elf. Each run gets a fresh directory on disk (out/bench/postmark-*, or
POSTMARK_DIR) with the same script; times are the program's own (its "us=" over the three phases,
CLOCK_MONOTONIC: the host's natively, the host's through the clock hypercall in the guest). Checks
that both runs print the same counts and leave the same files behind. Reports the guest-to-native
time ratio, hypercalls per second and microseconds per hypercall as the guest sees them (exit and
VMM together), and the VMM's own share of each (its --stats table). Median of POSTMARK_RUNS (3).
Prints a Markdown table for docs/benchmarks.md.
"""
import os, re, shutil, statistics, subprocess, sys

binary, guests = sys.argv[1], sys.argv[2]
native = os.path.join(os.path.dirname(os.path.abspath(guests)), "native", "postmark")
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
directory = os.environ.get("POSTMARK_DIR", os.path.join(root, "out", "bench"))
runs = int(os.environ.get("POSTMARK_RUNS", "3"))
number = os.environ.get("POSTMARK_NUMBER", "500")
transactions = os.environ.get("POSTMARK_TRANSACTIONS", "1000")
script = (f"set number {number}\nset transactions {transactions}\nset size 500 10000\nset subdirectories 10\n"
          "set read 4096\nset write 4096\nset location work\nset seed 42\nrun\nquit\n")


def tree(path):
    entries = []
    for base, dirs, files in os.walk(path):
        for name in sorted(dirs + files):
            full = os.path.join(base, name)
            entries.append((os.path.relpath(full, path), os.path.getsize(full) if os.path.isfile(full) else -1))
    return sorted(entries)


def fresh(name):
    path = os.path.join(directory, f"postmark-{name}")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    with open(os.path.join(path, "pm.cfg"), "w") as f:
        f.write(script)
    return path


def counts(output):
    line = re.search(r"^postmark: (created=.*) us=(\d+)$", output, re.M)
    if not line:
        raise SystemExit(f"postmark printed no counts:\n{output}")
    return line.group(1), int(line.group(2))


def run_native():
    path = fresh("native")
    done = subprocess.run([native, "pm.cfg"], cwd=path, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"native postmark failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    line, us = counts(done.stdout)
    return line, us, tree(path)


def run_guest():
    path = fresh("guest")
    done = subprocess.run([binary, "run", f"{guests}/postmark.elf", "--share", path, "--cmdline", "pm.cfg", "--stats"],
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 1:
        raise SystemExit(f"guest postmark failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    line, us = counts(done.stdout)
    total = re.search(r"^100\.00\s+([0-9.]+)\s+\d+\s+(\d+)\s+\d*\s*total$", done.stderr, re.M)
    if not total:
        raise SystemExit(f"no hypercall table in --stats:\n{done.stderr}")
    return line, us, tree(path), int(total.group(2)), float(total.group(1))


results = []
for _ in range(runs):
    n_line, n_us, n_tree = run_native()
    g_line, g_us, g_tree, calls, vmm_seconds = run_guest()
    if n_line != g_line:
        raise SystemExit(f"counts differ:\n native {n_line}\n guest  {g_line}")
    if n_tree != g_tree:
        raise SystemExit(f"the runs left different files:\n native {n_tree}\n guest  {g_tree}")
    results.append((n_us, g_us, calls, vmm_seconds))

n_us = statistics.median(r[0] for r in results)
g_us = statistics.median(r[1] for r in results)
calls = results[0][2]
vmm_us = statistics.median(r[3] * 1e6 for r in results)
print(f"PostMark: {number} files, {transactions} transactions, 500-10000 bytes, 10 subdirectories, 4 KiB blocks; "
      f"median of {runs}; counts: {n_line}; both runs left {n_tree}")
print()
print("| measure | native | swiftvmm guest (--share) | ratio guest / native |")
print("|---|---|---|---|")
print(f"| PostMark time (all three phases) | {n_us / 1000:.1f} ms | {g_us / 1000:.1f} ms | {g_us / n_us:.1f} |")
print(f"| hypercalls | | {calls} ({calls / (g_us / 1e6):.0f} per second) | |")
print(f"| µs per hypercall, as the guest sees it (exit + VMM) | | {g_us / calls:.1f} | |")
print(f"| µs per hypercall inside the VMM (--stats) | | {vmm_us / calls:.1f} | |")
