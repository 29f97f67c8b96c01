#!/usr/bin/env python3
"""Page sharing and steal time (run by `make bench`, or alone: bench/sharing.py SWIFTVMM GUESTS).

- Memory saved against VM count: 1, 2, 4, 8 host-mode VMs of samepages (24 MiB identical across
  VMs, 4 MiB of zeros, 4 MiB of their own), ksmd at 10000 pages a wake-up: the process's Pss_Anon
  before and after the merge, what the VMs report as Shared, and how long the merge took.
- Time to merge against pages_to_scan (100, 1000, 10000), two such VMs.
- Copy-on-write break cost seen by the guest: its rewrite of 8 MiB, merged against not merged.
- Steal time, guest against host: two stealtime VMs pinned to one host CPU, then to two.

ksmd's settings are host-wide: they are raised for the measurement and put back afterwards.
Prints Markdown tables for docs/benchmarks.md.
"""
import json, os, re, socket, subprocess, sys, tempfile, time

binary, guests = sys.argv[1], sys.argv[2]
KSM = "/sys/kernel/mm/ksm"
SAME, ZERO, UNIQUE, REWRITE = 24, 4, 4, 8


def ksm(name, value=None):
    path = f"{KSM}/{name}"
    if value is None:
        return open(path).read().strip()
    with open(path, "w") as f:
        f.write(str(value))


def get(sock, path):
    """One HTTP GET over the API's Unix socket; the JSON body or None."""
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(sock)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        s.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return json.loads(body) if head.split()[1] == b"200" else None
    except (OSError, ValueError, IndexError):
        return None


def patch(sock, path, body):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(f"PATCH {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
    s.recv(4096)
    s.close()


class Host:
    """A swiftvmm host process running `count` samepages VMs with page sharing."""

    def __init__(self, count, sharing=True):
        self.dir = tempfile.mkdtemp(prefix="swiftvmm-sharing-")
        self.sock, self.count = f"{self.dir}/api.sock", count
        self.serial = [f"{self.dir}/vm{i}.out" for i in range(count)]
        vms = [{"name": f"vm{i}", "image": f"{guests}/samepages.elf", "memory": "64M", "balloon": True, "serial": "file:" + self.serial[i],
                "cmdline": f"same={SAME}M zero={ZERO}M unique={UNIQUE}M seed={i} hold=300 rewrite={REWRITE}M after=0"}
               for i in range(count)]
        config = f"{self.dir}/host.json"
        json.dump({"period": 0.5, "placement": "none", "memoryPolicy": "none", "pageSharing": sharing, "vms": vms}, open(config, "w"))
        self.process = subprocess.Popen([binary, "host", config, "--quiet", "--duration", "400", "--api-sock", self.sock],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def text(self, i):
        try:
            return open(self.serial[i]).read()
        except OSError:
            return ""

    def wait(self, what, condition, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.1)
        self.stop()
        sys.exit(f"sharing bench: {what} did not happen within {timeout} s")

    def record(self, after_period=0):
        def newer():
            r = get(self.sock, "/swiftvmm/host")
            return r if r and r["period"] > after_period else None
        return self.wait("a period", newer, 30)

    def rewrite(self):
        for i in range(self.count):
            patch(self.sock, f"/swiftvmm/host/vms/vm{i}/balloon", '{"amount_mib": 1}')
        self.wait("the rewrites", lambda: all("samepages: rewrote" in self.text(i) for i in range(self.count)), 120)
        return [int(re.search(r"(\d+) ns a page", self.text(i)).group(1)) for i in range(self.count)]

    def stop(self):
        self.process.wait(timeout=120)


def merged(record, expected):
    return record and all(vm.get("sharedMiB", 0) >= expected * 0.97 for vm in record["vms"])


saved = (ksm("run"), ksm("pages_to_scan"))
rows_count, rows_scan, rows_cow, rows_steal = [], [], [], []
try:
    ksm("run", 0)
    for count in (1, 2, 4, 8):
        host = Host(count)
        host.wait("the fill", lambda: all("samepages: filled" in host.text(i) for i in range(count)), 60)
        before = host.record(host.record()["period"] + 1)
        ksm("pages_to_scan", 10000)
        ksm("run", 1)
        start = time.monotonic()
        # One VM alone shares only its zero pages: its other pages all differ from each other.
        expected = SAME + ZERO if count > 1 else ZERO
        after = host.wait("the merge", lambda: (lambda r: r if merged(r, expected) else None)(get(host.sock, "/swiftvmm/host")), 180)
        seconds = time.monotonic() - start
        after = host.record(after["period"])
        cow = host.rewrite()
        host.stop()
        ksm("run", 0)
        duplicates = (count - 1) * SAME + count * ZERO - 1 / 256
        shared = sum(vm["sharedMiB"] for vm in after["vms"]) / count
        rows_count.append((count, f"{before['pssAnonMiB']:.1f}", f"{after['pssAnonMiB']:.1f}",
                           f"{before['pssAnonMiB'] - after['pssAnonMiB']:.1f}", duplicates, f"{shared:.1f}", f"{seconds:.1f}",
                           f"{sorted(cow)[len(cow) // 2] / 1000:.1f}"))
        print("count", rows_count[-1], flush=True)

    for scan in (100, 1000, 10000):
        host = Host(2)
        host.wait("the fill", lambda: all("samepages: filled" in host.text(i) for i in range(2)), 60)
        host.record()
        ksm("pages_to_scan", scan)
        ksm("run", 1)
        start = time.monotonic()
        host.wait("the merge", lambda: merged(get(host.sock, "/swiftvmm/host"), SAME + ZERO), 300)
        rows_scan.append((scan, f"{time.monotonic() - start:.1f}"))
        host.rewrite()
        host.stop()
        ksm("run", 0)
        print("scan", rows_scan[-1], flush=True)

    # The same rewrite without sharing: what writing 8 MiB costs the guest when no page is merged.
    host = Host(2, sharing=False)
    host.wait("the fill", lambda: all("samepages: filled" in host.text(i) for i in range(2)), 60)
    host.record()
    plain = host.rewrite()
    host.stop()
    rows_cow.append(("not merged (pageSharing off)", f"{sorted(plain)[0] / 1000:.1f}"))
    rows_cow.append(("merged (8 VMs above, median)", rows_count[-1][7]))
finally:
    ksm("run", saved[0])
    ksm("pages_to_scan", saved[1])

cpus = subprocess.run(["cat", "/sys/devices/system/cpu/online"], capture_output=True, text=True).stdout.strip()
first, last = cpus.split("-")[0], cpus.split("-")[-1]
for label, pins in (("one host CPU", (first, first)), ("two host CPUs", (first, last))):
    runs = [subprocess.Popen(["taskset", "-c", cpu, binary, "run", f"{guests}/stealtime.elf", "--stats", "--", "seconds=3"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for cpu in pins]
    for run in runs:
        out, err = run.communicate()
        real = int(re.search(r"real_ms=(\d+)", out).group(1))
        steal = int(re.search(r"steal_ms=(\d+)", out).group(1))
        record = int(re.search(r"guest_reported_ms=(\d+)", err).group(1))
        delay = int(re.search(r"host_run_delay_ms=(\d+)", err).group(1))
        rows_steal.append((label, real, steal, f"{steal / real:.2f}", record, delay, f"{record / delay:.3f}" if delay else "-"))

print("\n| identical VMs | Pss_Anon before (MiB) | after (MiB) | saved (MiB) | duplicate MiB | Shared per VM (MiB) | merge time (s) | guest rewrite, µs per page (median) |")
print("|---|---|---|---|---|---|---|---|")
for row in rows_count:
    print("| " + " | ".join(str(v) for v in row) + " |")
print("\n| pages_to_scan | time to merge 2 VMs (s) |\n|---|---|")
for row in rows_scan:
    print(f"| {row[0]} | {row[1]} |")
print("\n| guest rewrite of 8 MiB | µs per page |\n|---|---|")
for row in rows_cow:
    print(f"| {row[0]} | {row[1]} |")
print("\n| two busy VMs on | guest real (ms) | guest steal over its run (ms) | steal/real | record at end (ms) | host run_delay (ms) | record/run_delay |")
print("|---|---|---|---|---|---|---|")
for row in rows_steal:
    print("| " + " | ".join(str(v) for v in row) + " |")
