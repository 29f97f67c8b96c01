#!/usr/bin/env python3
"""Snapshot create and restore times (run by `make bench`, or alone: bench/snapshot.py SWIFTVMM GUESTS).

For each RAM size, a `dirty` guest writes pages of half its RAM (three times as many writes as
pages, chosen at random: about 95% of them end up non-zero) and holds; then
`swiftvmm snapshot --stop` saves it (the time the create call took, the files' sizes on disk), and
`run --restore --paused` rebuilds it twice, lazily (the memory file mapped) and eagerly (read in
full), each time reading the VMM's own "VM restored ... in X ms" (guest memory, devices, vCPUs and
every state call; not process start). The restored guest is resumed and must print nothing new
(it holds), then is stopped. Files go to out/bench (the disk), or SNAPSHOT_DIR.
Prints a Markdown table for docs/benchmarks.md.
"""
import os, re, subprocess, sys, time

binary, guests = sys.argv[1], sys.argv[2]
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
directory = os.environ.get("SNAPSHOT_DIR", os.path.join(root, "out", "bench"))
os.makedirs(directory, exist_ok=True)
SIZES = [int(s) for s in os.environ.get("SNAPSHOT_SIZES_MIB", "128 256 512 2048").split()]


def wait(what, condition, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def control(sock, *request):
    return subprocess.run([binary, "control", sock, *request], capture_output=True, text=True, timeout=60)


def snapshot(mib):
    sock, out = f"{directory}/snap-src.sock", f"{directory}/snap-src.out"
    state, memory = f"{directory}/snap-{mib}.state", f"{directory}/snap-{mib}.mem"
    wss = mib // 2
    for stale in (out, sock):
        if os.path.exists(stale):
            os.unlink(stale)
    source = subprocess.Popen([binary, "run", f"{guests}/dirty.elf", "--memory", f"{mib}M", "--api-sock", sock,
                               "--serial", f"file:{out}", "--", f"wss={wss}M", f"steps={wss * 256 * 3}", "rate=0",
                               "every=100000000", "hold=1"], stderr=subprocess.DEVNULL)
    wait("the working set", lambda: os.path.exists(out) and "done" in open(out).read(), 600)
    taken = subprocess.run([binary, "snapshot", sock, "--state", state, "--memory", memory, "--stop"],
                           capture_output=True, text=True, timeout=600)
    source.wait(60)
    create_ms = float(re.search(r"milliseconds=([0-9.]+)", taken.stdout).group(1))
    disk = os.stat(memory).st_blocks * 512 >> 20
    return state, memory, create_ms, disk, wss


def restore(state, memory, eager):
    sock, out = f"{directory}/snap-dst.sock", f"{directory}/snap-dst.out"
    if os.path.exists(out):
        os.unlink(out)
    process = subprocess.Popen([binary, "run", "--restore", state, "--memory-file", memory, "--paused", "--api-sock", sock,
                                "--serial", f"file:{out}", "--log-level", "info"] + (["--memory-eager"] if eager else []),
                               stderr=subprocess.PIPE, text=True)
    wait("the API socket", lambda: os.path.exists(sock), 120)
    resumed = control(sock, "resume")
    time.sleep(0.3)
    stopped = control(sock, "stop")
    _, errors = process.communicate(timeout=60)
    found = re.search(r"VM restored from .* in ([0-9.]+) ms", errors)
    printed = open(out).read() if os.path.exists(out) else ""
    ok = found and process.returncode == 72 and resumed.returncode == 0 and stopped.returncode == 0 and printed == ""
    if not ok:
        raise SystemExit(f"restore failed: status {process.returncode}, output {printed!r}, stderr {errors[-500:]}")
    return float(found.group(1))


rows = []
for mib in SIZES:
    state, memory, create_ms, disk, wss = snapshot(mib)
    lazy = [restore(state, memory, False) for _ in range(3)]
    eager = [restore(state, memory, True) for _ in range(2)]
    rows.append((mib, wss, create_ms, disk, os.path.getsize(state), sorted(lazy)[1], min(eager)))
    print(f"  {mib} MiB: create {create_ms:.1f} ms, memory file {disk} MiB on disk, lazy restore {sorted(lazy)[1]:.1f} ms, "
          f"eager {min(eager):.1f} ms", flush=True)
    os.unlink(state)
    os.unlink(memory)

print()
print("| guest RAM (touched) | snapshot create (pause to files synced) | memory file on disk | state file | restore, lazy (median of 3) | restore, eager (best of 2) |")
print("|---|---|---|---|---|---|")
for mib, wss, create_ms, disk, state_size, lazy, eager in rows:
    print(f"| {mib} MiB ({wss} MiB) | {create_ms:.1f} ms | {disk} MiB | {state_size} bytes | {lazy:.1f} ms | {eager:.1f} ms |")
