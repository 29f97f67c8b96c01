#!/usr/bin/env python3
"""Host-mode benchmark (run by `make bench`): the placement scenarios 1 and 5 and memory scenario 1
of shared/scenarios.md with 8 VMs on 2 pCPUs. Prints periods to convergence, the settled usage
spread, moves per period, the controller's CPU cost per period and memory trajectories, and
renders plots to out/bench/."""
import json, os, statistics, subprocess, sys, tempfile, time

binary, guests = sys.argv[1], sys.argv[2]
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "out", "bench")
os.makedirs(out, exist_ok=True)


def run(name, config, duration):
    directory = tempfile.mkdtemp(prefix="swiftvmm-bench-")
    path = os.path.join(directory, "host.json")
    with open(path, "w") as f:
        json.dump(config, f)
    log = os.path.join(out, f"{name}.jsonl")
    plot = os.path.join(out, f"{name}.png")
    subprocess.run([binary, "host", path, "--duration", str(duration), "--log-file", log, "--plot", plot, "--quiet"], check=True)
    with open(log) as f:
        return [json.loads(line) for line in f if line.strip()]


def burners(duty, affinity):
    return [{"name": f"vm{i + 1}", "image": f"{guests}/cpuburn.elf", "memory": "32M",
             "cmdline": f"duty={duty(i)} report=1000", **({"affinity": [affinity(i)]} if affinity(i) else {})} for i in range(8)]


def spread(record):
    usages = [p["usage"] for p in record["pcpus"]]
    return max(usages) - min(usages)


def placement_summary(name, log):
    counts = [[len(p["vms"]) for p in r["pcpus"]] for r in log]
    # Converged: from this period on, equal vCPU counts per pCPU and no further moves.
    converged = next((i + 1 for i in range(len(log))
                      if all(max(c) == min(c) for c in counts[i:]) and all(r["moves"] == 0 for r in log[i + 1:])), None)
    settled = statistics.mean(spread(r) for r in log[-3:])
    after = log[converged:] if converged else []
    moves = statistics.mean(r["moves"] for r in after) if after else float("nan")
    cpu = statistics.median(r["controllerCPUMilliseconds"] for r in log)
    print(f"  {name}: converged (equal counts) in period {converged}, total moves {sum(r['moves'] for r in log)}, "
          f"moves/period after {moves:.2f}, settled usage spread {settled:.1f} points, "
          f"final usage {[round(p['usage'], 1) for p in log[-1]['pcpus']]}, controller CPU {cpu:.2f} ms/period")


print("== host mode: placement (8 VMs, 2 pCPUs, period 1 s)")
for name, placement, duty, affinity, duration in [
        ("scenario1-load-aware", "load-aware", lambda i: 100, lambda i: [0], 10.5),
        ("scenario5-load-aware", "load-aware", lambda i: 35 if i % 2 == 0 else 5, lambda i: None, 10.5),
        ("scenario5-round-robin", "round-robin", lambda i: 35 if i % 2 == 0 else 5, lambda i: None, 10.5)]:
    log = run(name, {"period": 1, "placement": placement, "hostCPUs": [0, 1], "vms": burners(duty, affinity)}, duration)
    placement_summary(name, log)

print("== host mode: memory scenario 1 (vm1 consumes 600 MiB then frees it; 7 idle VMs)")
vms = [{"name": f"vm{i + 1}", "image": f"{guests}/memhog.elf", "memory": "1G", "balloon": True, "balloonTarget": "512M",
        "cmdline": ("phases=touch:600M@60M,hold:3,free:600M@150M,serve" if i == 0 else "phases=serve") + " oom=wait"} for i in range(8)]
log = run("memory-scenario1", {"period": 1, "placement": "none", "hostCPUs": [0, 1], "hostReserve": "1G", "vms": vms}, 30)
vm1 = [next(v for v in r["vms"] if v["name"] == "vm1")["actualMiB"] for r in log]
idle = [statistics.mean(v["actualMiB"] for v in r["vms"] if v["name"] != "vm1") for r in log]
rss = [r["rssAnonMiB"] for r in log]
cpu = statistics.median(r["controllerCPUMilliseconds"] for r in log)
print(f"  vm1 Actual (MiB) per period: {[round(x) for x in vm1]}")
print(f"  idle VMs' mean Actual (MiB): {[round(x) for x in idle]}")
print(f"  process RssAnon (MiB): peak {max(rss):.0f}, final {rss[-1]:.0f}; controller CPU {cpu:.2f} ms/period")
print(f"  plots and logs: {os.path.normpath(out)}/*.png, *.jsonl")


def resident(pid):
    """RssAnon and RssFile (KiB) of a running process."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                fields[key] = int(value.split()[0])
    return fields["RssAnon"], fields["RssFile"]


def host_memory(count):
    """The resident memory of one `swiftvmm host` process running `count` idle 32 MiB VMs, taken
    after they settled (3 s in): each VM's guest has touched the same few pages (its runtime)."""
    directory = tempfile.mkdtemp(prefix="swiftvmm-bench-")
    path = os.path.join(directory, "host.json")
    vms = [{"name": f"vm{i + 1}", "image": f"{guests}/cpuburn.elf", "memory": "32M", "cmdline": "duty=1"} for i in range(count)]
    with open(path, "w") as f:
        json.dump({"period": 1, "placement": "none", "memoryPolicy": "none", "hostCPUs": [0, 1], "vms": vms}, f)
    process = subprocess.Popen([binary, "host", path, "--duration", "5", "--quiet"])
    time.sleep(3)
    anon, file = resident(process.pid)
    process.wait()
    return anon, file


print("== host mode: memory per extra VM (idle cpuburn guests of 32 MiB, one process)")
one, nine = host_memory(1), host_memory(9)
print(f"  1 VM: RssAnon {one[0]} KiB, RssFile {one[1]} KiB; 9 VMs: RssAnon {nine[0]} KiB, RssFile {nine[1]} KiB")
print(f"  private memory per extra VM (guest pages included): {(nine[0] - one[0]) / 8:.0f} KiB (target < 1024 KiB)")
