#!/usr/bin/env python3
"""Linux boot benchmark (make bench-linux): for Debian's stock kernel and our small kernel, the
wall time from starting swiftvmm to its first serial byte, to the kernel's first message
("Linux version"), to "Run /init", and (small kernel) to the balloon driver being ready and
to a 128 MiB inflation; plus the VMM's own memory while Linux runs (`swiftvmm control memory`:
anonymous RSS that is not guest RAM, and file-backed RSS). Prints a Markdown table.

usage: linux.py SWIFTVMM LINUX_DIR [stock] [small]
On PVM the stock kernel takes over ten minutes; on VT-x/AMD-V every figure is well under a second
but the balloon's and the kernel's own delays.
"""
import os, re, subprocess, sys, tempfile, threading, time

binary, kernels = sys.argv[1], sys.argv[2]
which = sys.argv[3:] or ["small", "stock"]
COMMON = ("console=ttyS0 earlyprintk=serial,ttyS0,115200 loglevel=7 panic=-1 noxsave "
          "clearcpuid=308,295,141,137,147,148,153,129")
STOCK = ("mitigations=off nowatchdog pci=off audit=0 cryptomgr.notests lsm=capability ipv6.disable=1 "
         "panic=0 initcall_blacklist=trace_eval_init,tracer_init_tracefs,init_kprobe_trace,"
         "load_system_certificate_list,load_revocation_certificate_list")


class Boot:
    """One swiftvmm process; a reader thread stamps when each marker first appears on serial."""

    def __init__(self, arguments, markers):
        self.socket = tempfile.mktemp(prefix="swiftvmm-bench-", suffix=".sock")
        self.command = [binary, "run"] + arguments + ["--api-sock", self.socket]
        self.start = time.monotonic()
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.markers, self.seen, self.text = markers, {}, b""
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        while True:
            chunk = self.process.stdout.read1(65536)
            if not chunk:
                return
            now = time.monotonic() - self.start
            self.seen.setdefault("first byte", now)
            self.text += chunk
            for name, marker in self.markers.items():
                if name not in self.seen and marker.encode() in self.text:
                    self.seen[name] = now

    def wait_for(self, name, timeout):
        deadline = time.monotonic() + timeout
        while name not in self.seen and time.monotonic() < deadline and self.process.poll() is None:
            time.sleep(0.05)
        if name not in self.seen:
            sys.exit(f"{name!r} did not appear within {timeout} s:\n{self.text[-3000:].decode(errors='replace')}")
        return self.seen[name]

    def control(self, request):
        reply = subprocess.run([binary, "control", self.socket] + request.split(), capture_output=True, text=True)
        return reply.stdout

    def value(self, request, key):
        match = re.search(rf"\b{key}=(\d+)", self.control(request))
        return int(match.group(1)) if match else None

    def poll(self, request, key, wanted, timeout):
        """Seconds since start at which `request` first reported key=wanted (polled every 50 ms)."""
        deadline = time.monotonic() + timeout
        while self.value(request, key) != wanted:
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                sys.exit(f"{request}: {key} did not reach {wanted} within {timeout} s:\n"
                         f"{self.text[-3000:].decode(errors='replace')}")
            time.sleep(0.05)
        return time.monotonic() - self.start

    def stop(self):
        if self.process.poll() is None:
            self.control("stop")
        self.process.wait(timeout=60)


def memory_row(boot):
    reply = boot.control("memory")
    values = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", reply)}
    return values.get("anon_kib", 0) - values.get("guest_resident_kib", 0), values.get("file_kib", 0)


rows = []
if "small" in which:
    arguments = ["--kernel", f"{kernels}/small/vmlinux", "--initrd", f"{kernels}/small/initrd.cpio", "--memory", "512M",
                 "--cpus", "2", "--balloon", "--cmdline", COMMON + " pci=off"]
    boot = Boot(arguments, {"Linux version": "Linux version", "Run /init": "Run /init as init process"})
    # The driver probes before init runs: poll for it from the start, not after "Run /init".
    ready = boot.poll("balloon", "driver_ready", 1, 600)
    boot.wait_for("Run /init", 600)
    anon, file = memory_row(boot)
    start = time.monotonic()
    boot.control("balloon 128M")
    inflate = boot.poll("balloon", "actual_kib", 131072, 600) - (start - boot.start)
    start = time.monotonic()
    boot.control("balloon 0")
    deflate = boot.poll("balloon", "actual_kib", 0, 600) - (start - boot.start)
    boot.stop()
    rows.append(("small, 2 vCPUs", boot.seen["first byte"], boot.seen["Linux version"], boot.seen["Run /init"],
                 f"{ready:.1f}", f"{inflate:.1f} s / {deflate:.1f} s", anon, file, " ".join(boot.command)))

if "stock" in which:
    arguments = ["--kernel", f"{kernels}/stock/vmlinux", "--initrd", f"{kernels}/stock/initrd.cpio", "--memory", "512M",
                 "--cpus", "2", "--cmdline", COMMON + " " + STOCK]
    boot = Boot(arguments, {"Linux version": "Linux version", "Run /init": "Run /init as init process"})
    boot.wait_for("Run /init", 3600)
    anon, file = memory_row(boot)
    boot.stop()
    rows.append(("stock (Debian cloud), 2 vCPUs", boot.seen["first byte"], boot.seen["Linux version"], boot.seen["Run /init"],
                 "-", "-", anon, file, " ".join(boot.command)))

print("| kernel | first serial byte (s) | \"Linux version\" (s) | \"Run /init\" (s) | balloon ready (s) | inflate / deflate 128 MiB | VMM anon RSS beyond guest RAM (KiB) | VMM file RSS (KiB) |")
print("|---|---|---|---|---|---|---|---|")
for row in rows:
    print(f"| {row[0]} | {row[1]:.2f} | {row[2]:.2f} | {row[3]:.1f} | {row[4]} | {row[5]} | {row[6]} | {row[7]} |")
print()
for row in rows:
    print(f"{row[0]}: {row[8]}")
