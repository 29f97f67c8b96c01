#!/usr/bin/env python3
"""Live migration over loopback (run by `make bench`, or alone: bench/migration.py SWIFTVMM GUESTS).

A 256 MiB `dirty` guest first fills a 128 MiB working set (every page non-zero), then dirties it at
a given rate; after a second of that, `swiftvmm migrate` moves it to a `run --incoming` VMM on this
machine (TCP on 127.0.0.1). For each dirty rate, pre-copy (downtime target 50 ms) and the naive way
(pause, copy, resume): total time, the downtime measured (source pause to the destination's start),
rounds, MiB sent against guest RAM. A rate the link cannot keep up with shows as abandoned.
Prints a Markdown table for docs/benchmarks.md.
"""
import os, random, re, subprocess, sys, time

binary, guests = sys.argv[1], sys.argv[2]
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
directory = os.path.join(root, "out", "bench")
os.makedirs(directory, exist_ok=True)
RATES = os.environ.get("MIGRATION_RATES_MIB", "0.5 4 16 64 256").split()


def wait(what, condition, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def migrate_once(rate, naive):
    port = random.randint(42000, 48000)
    src_sock, dst_sock = f"{directory}/mig-src.sock", f"{directory}/mig-dst.sock"
    src_out = f"{directory}/mig-src.out"
    for stale in (src_sock, dst_sock, src_out):
        if os.path.exists(stale):
            os.unlink(stale)
    destination = subprocess.Popen([binary, "run", "--incoming", f"tcp:127.0.0.1:{port}", "--serial", "none", "--api-sock", dst_sock],
                                   stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    rate_bytes = int(float(rate) * 1048576)
    source = subprocess.Popen([binary, "run", f"{guests}/dirty.elf", "--memory", "256M", "--api-sock", src_sock, "--serial", f"file:{src_out}",
                               "--", "wss=128M", "fill=1", f"rate={rate_bytes}", "steps=4000000000", "every=4000000000"],
                              stderr=subprocess.DEVNULL)
    wait("the filled working set", lambda: os.path.exists(src_out) and "stream(s)" in open(src_out).read(), 120)
    time.sleep(1)
    result = subprocess.run([binary, "migrate", src_sock, f"tcp:127.0.0.1:{port}", "--downtime-ms", "50", "--timeout", "30"]
                            + (["--naive"] if naive else []), capture_output=True, text=True, timeout=120)
    # The final status line (stdout), or the last progress line (stderr) of a failed one.
    progress = [l for l in result.stderr.splitlines() if l.startswith("migrate: state=")]
    line = (result.stdout.strip().splitlines() or progress or [""])[-1]
    fields = dict(re.findall(r"(\w+)=([0-9.]+|\w+)", line))
    if result.returncode == 0:
        source.wait(30)
        wait("the destination's API", lambda: os.path.exists(dst_sock), 30)
        subprocess.run([binary, "control", dst_sock, "stop"], capture_output=True, timeout=30)
        destination.wait(30)
        outcome = "completed"
    else:
        outcome = "abandoned" if "abandoned" in result.stderr else "failed: " + result.stderr.strip().splitlines()[-1]
        final = subprocess.run([binary, "control", "--json", src_sock, "info"], capture_output=True, text=True, timeout=30)
        outcome += " (source running)" if '"Running"' in final.stdout else " (source not running!)"
        subprocess.run([binary, "control", src_sock, "stop"], capture_output=True, timeout=30)
        source.wait(30)
        destination.kill()
        destination.wait(30)
    return outcome, fields


rows = []
for rate in RATES:
    for naive in (False, True):
        outcome, f = migrate_once(rate, naive)
        row = (rate, "naive" if naive else "pre-copy", outcome, f.get("elapsed_ms", "-"), f.get("downtime_ms", "-"),
               f.get("iteration", "-"), f.get("mib_sent", "-"), f.get("bandwidth_mib_s", "-"))
        rows.append(row)
        print(f"  {rate} MiB/s {row[1]}: {outcome}, total {row[3]} ms, downtime {row[4]} ms, {row[5]} round(s), {row[6]} MiB sent, "
              f"bandwidth {row[7]} MiB/s", flush=True)

print()
print("| dirty rate | mode | outcome | total time | downtime | rounds | MiB sent (guest RAM 256, 128 touched) | bandwidth |")
print("|---|---|---|---|---|---|---|---|")
for rate, mode, outcome, total, downtime, rounds, sent, bandwidth in rows:
    print(f"| {rate} MiB/s | {mode} | {outcome} | {total} ms | {downtime} ms | {rounds} | {sent} | {bandwidth} MiB/s |")
