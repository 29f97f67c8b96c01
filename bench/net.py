#!/usr/bin/env python3
"""virtio-net: ping round trips and echo frames per second between the host and the net guest
(Guests/net.c) over a tap, in a network namespace of its own (run by `make bench`, or alone:
bench/net.py SWIFTVMM GUESTS). NET_PINGS (default 2000) echo requests: first one at a time
(200 ms apart: the round trip), then as a flood (`ping -f`: each request as soon as the last
reply came, or 100 per second without replies), which gives frames per second both ways. The
guest's --stats (exits) divided by the frames gives exits per frame. Prints a Markdown table for
docs/benchmarks.md.
"""
import os, re, subprocess, sys

binary, guests = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
pings = int(os.environ.get("NET_PINGS", "2000"))
slow = 20
script = f"""
ip link set lo up
work=$(mktemp -d); cd "$work"
'{binary}' run '{guests}/net.elf' --net tap=bench0 --stats --cmdline "pings={pings + slow + 1} seconds=600 quiet=1" > vm.out 2> vm.err &
vmm=$!
for i in $(seq 1 1500); do ip link show bench0 >/dev/null 2>&1 && break; sleep 0.02; done
ip addr add 10.0.2.1/24 dev bench0 && ip link set bench0 up
for i in $(seq 1 3000); do grep -q 'net: mac' vm.out && break; sleep 0.02; done
ping -c 1 -w 30 10.0.2.15 > /dev/null
echo "== slow"; ping -c {slow} -i 0.2 -w 120 10.0.2.15 | tail -2
echo "== flood"; start=$(date +%s%N); ping -f -c {pings} -w 300 10.0.2.15 | tail -2; end=$(date +%s%N)
echo "flood_ns $((end - start))"
wait $vmm
cat vm.err; cd /; rm -rf "$work"
"""
result = subprocess.run(["unshare", "--net", "/bin/sh", "-c", script], capture_output=True, text=True, timeout=900)
out = result.stdout
def rtt(section):
    m = re.search(r"rtt min/avg/max/mdev = ([\d.]+)/([\d.]+)/([\d.]+)", section)
    return m.groups() if m else ("-", "-", "-")
slow_part = out.split("== flood")[0]
flood_part = out.split("== flood")[1] if "== flood" in out else ""
received = re.search(r"(\d+) received", flood_part)
flood_ns = int(re.search(r"flood_ns (\d+)", out).group(1)) if "flood_ns" in out else 0
exits = sum(int(m) for m in re.findall(r"vcpu\d+: exits=(\d+)", out))
tx = re.search(r"tx (\d+) frames", out)
rx = re.search(r"rx (\d+) frames", out)
frames = (int(tx.group(1)) if tx else 0) + (int(rx.group(1)) if rx else 0)
echoes = int(received.group(1)) if received else 0
print(f"\n{pings} flood echo requests after {slow} at 200 ms intervals; ping from the host, the guest's echo replies written by its CPL 3 driver\n")
print("| measure | result |")
print("|---|---|")
print("| round trip, one at a time (min / avg / max ms) | {} / {} / {} |".format(*rtt(slow_part)))
print("| round trip under flood (min / avg / max ms) | {} / {} / {} |".format(*rtt(flood_part)))
print(f"| flood: echoes answered / sent | {echoes} / {pings} |")
print(f"| flood: echo round trips per second | {echoes / (flood_ns / 1e9):.0f} |" if flood_ns else "| flood | - |")
print(f"| frames per second through the device (both ways) | {2 * echoes / (flood_ns / 1e9):.0f} |" if flood_ns else "| frames | - |")
print(f"| vCPU exits per frame (whole run, {frames} frames) | {exits / frames:.2f} |" if frames else "| exits per frame | - |")
if result.returncode != 0 or not received:
    sys.exit(f"net bench failed:\n{out}\n{result.stderr}")
