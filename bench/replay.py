#!/usr/bin/env python3
"""Record/replay and fault tolerance (run by `make bench`, or alone: bench/replay.py SWIFTVMM GUESTS).

- Exit throughput of the port loop (Guests/portloop: 200000 port writes, real mode, no interrupt
  controllers) plain, under --deterministic, under --record, and its replay, alternated over
  REPLAY_ROUNDS (5) rounds, medians; the log's bytes per exit from the recording's line.
- The `seq` guest (400 lines at 200 Hz, sleeping in HLT between them): wall time recorded and
  replayed (a replay skips the waits), and the primary's wall time under --ft-primary with a
  backup against --deterministic alone (the output rule's cost). An output-heavy run (seq at
  5000 Hz: a line per tick) shows the rule where it costs most.
- Failover time: the primary is killed with SIGKILL one second into seq; the time until the
  backup writes the next byte of the shared output file and until its "takes over" line, median
  of REPLAY_FAILOVERS (5).
Prints a Markdown table for docs/benchmarks.md.
"""
import os, re, signal, statistics, subprocess, sys, tempfile, time

binary, guests = sys.argv[1], sys.argv[2]
rounds = int(os.environ.get("REPLAY_ROUNDS", "5"))
failovers = int(os.environ.get("REPLAY_FAILOVERS", "5"))
work = tempfile.mkdtemp(prefix="swiftvmm-replay-bench-")
portloop = ["--entry", "real", "--irqchip", "none", os.path.join(guests, "portloop.bin"), "--serial", "none", "--stats"]


def rate(arguments, command="run"):
    result = subprocess.run([binary, command] + arguments, capture_output=True, text=True, timeout=600)
    match = re.search(r"vcpu0: exits=(\d+).*?exits_per_s=([0-9.]+)", result.stderr)
    if not match:
        sys.exit(f"replay bench: no exit rate from {arguments}:\n{result.stderr}")
    return float(match.group(2)), result


def wall(arguments, command="run"):
    start = time.monotonic()
    result = subprocess.run([binary, command] + arguments, capture_output=True, text=True, timeout=600)
    if result.returncode != 1:
        sys.exit(f"replay bench: {arguments} ended with {result.returncode}:\n{result.stderr}")
    return time.monotonic() - start, result


plain, deterministic, recorded, replayed, per_exit = [], [], [], [], []
log = os.path.join(work, "portloop.log")
for round in range(rounds):
    plain.append(rate(portloop)[0])
    deterministic.append(rate(portloop + ["--deterministic"])[0])
    value, result = rate(portloop + ["--record", log])
    recorded.append(value)
    match = re.search(r"recorded (\d+) exits to .* \((\d+) bytes", result.stderr)
    per_exit.append(int(match.group(2)) / int(match.group(1)))
    replayed.append(rate([log, "--serial", "none", "--stats"], "replay")[0])
    print(f"  round {round + 1}: plain {plain[-1]:.0f}/s deterministic {deterministic[-1]:.0f}/s "
          f"recording {recorded[-1]:.0f}/s replay {replayed[-1]:.0f}/s, {per_exit[-1]:.2f} log bytes per exit")
median = statistics.median

seq = [os.path.join(guests, "seq.elf"), "--cmdline", "count=400"]
seq_log = os.path.join(work, "seq.log")
seq_recorded = median([wall(seq + ["--record", seq_log])[0] for _ in range(3)])
seq_replayed = median([wall([seq_log], "replay")[0] for _ in range(3)])


def pair(arguments, kill_after=None):
    """A primary and backup on a fresh socket appending to one file; returns the primary's wall
    time (or the failover times when `kill_after` is given)."""
    socket, output = os.path.join(work, "ft.sock"), os.path.join(work, "ft.out")
    for path in (socket, output):
        if os.path.exists(path):
            os.unlink(path)
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    start = time.monotonic()
    primary = subprocess.Popen([binary, "run"] + arguments + ["--ft-primary", "unix:" + socket], stdout=fd, stderr=subprocess.PIPE, text=True)
    backup = subprocess.Popen([binary, "run", arguments[0], "--ft-backup", "unix:" + socket], stdout=fd, stderr=subprocess.PIPE, text=True)
    os.close(fd)
    if kill_after is None:
        primary.wait(timeout=600)
        elapsed = time.monotonic() - start
        backup.wait(timeout=600)
        return elapsed
    time.sleep(kill_after)
    size = os.path.getsize(output)
    primary.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    primary.wait()
    first_byte = None
    while first_byte is None and time.monotonic() - killed < 30:
        if os.path.getsize(output) > size:
            first_byte = time.monotonic() - killed
        else:
            time.sleep(0.0002)
    errors = backup.stderr.readline()
    took_over = time.monotonic() - killed if "takes over" in errors else None
    backup.wait(timeout=600)
    return first_byte, took_over


seq_alone = median([wall(seq + ["--deterministic"])[0] for _ in range(3)])
seq_pair = median([pair(seq) for _ in range(3)])
heavy = [os.path.join(guests, "seq.elf"), "--cmdline", "count=5000 hz=5000"]
heavy_alone = median([wall(heavy + ["--deterministic"])[0] for _ in range(3)])
heavy_pair = median([pair(heavy) for _ in range(3)])
times = [pair(seq, kill_after=1.0) for _ in range(failovers)]
first_bytes = [t[0] for t in times if t[0] is not None]
takeovers = [t[1] for t in times if t[1] is not None]

print()
print("| measure | value |")
print("|---|---|")
print(f"| port loop, plain | {median(plain):.0f} exits/s |")
print(f"| port loop, --deterministic | {median(deterministic):.0f} exits/s, ratio {median(deterministic) / median(plain):.3f} |")
print(f"| port loop, --record | {median(recorded):.0f} exits/s, ratio {median(recorded) / median(plain):.3f} to plain, {median(recorded) / median(deterministic):.3f} to deterministic |")
print(f"| log bytes per exit (port loop) | {median(per_exit):.2f} |")
print(f"| port loop, replay | {median(replayed):.0f} exits/s, ratio {median(replayed) / median(recorded):.3f} to the recording |")
print(f"| seq 400 lines at 200 Hz, recorded / replayed wall time | {seq_recorded:.2f} s / {seq_replayed:.2f} s (replay {seq_recorded / seq_replayed:.1f}x faster: it skips HLT waits) |")
print(f"| seq 400 at 200 Hz, --deterministic / --ft-primary with a backup | {seq_alone:.2f} s / {seq_pair:.2f} s, ratio {seq_pair / seq_alone:.3f} |")
print(f"| seq 5000 at 5000 Hz (output-heavy), --deterministic / --ft-primary | {heavy_alone:.2f} s / {heavy_pair:.2f} s, ratio {heavy_pair / heavy_alone:.3f} |")
if first_bytes:
    print(f"| failover: SIGKILL to the backup's next output byte | median {median(first_bytes) * 1000:.1f} ms, max {max(first_bytes) * 1000:.1f} ms ({len(first_bytes)} of {failovers}) |")
if takeovers:
    print(f"| failover: SIGKILL to the backup's takeover line | median {median(takeovers) * 1000:.1f} ms ({len(takeovers)} of {failovers}) |")
