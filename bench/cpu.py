#!/usr/bin/env python3
"""CPU time of a command, over RUNS runs (run by bench/run.sh).

usage: cpu.py RUNS STATUS COMMAND...   (STATUS: the exit status every run must end with)
Prints "median_cpu_ms=M min_cpu_ms=N max_cpu_ms=X": user + system time of the whole process (every
thread, from exec to exit), from wait4's rusage for that one child. posix_spawn starts it, so the
CPU of copying this interpreter is not counted. (Peak RSS is not reported: a child's ru_maxrss
keeps its parent's from before exec.)"""
import os, statistics, sys

runs, status, command = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
cpu = []
null = os.open(os.devnull, os.O_WRONLY)
for _ in range(runs):
    pid = os.posix_spawnp(command[0], command, os.environ,
                          file_actions=[(os.POSIX_SPAWN_DUP2, null, 1), (os.POSIX_SPAWN_DUP2, null, 2)])
    _, raw, usage = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(raw)
    if code != status:
        sys.exit(f"{command[0]} ended with status {code}, expected {status}")
    cpu.append((usage.ru_utime + usage.ru_stime) * 1000)
print(f"median_cpu_ms={statistics.median(cpu):.2f} min_cpu_ms={min(cpu):.2f} max_cpu_ms={max(cpu):.2f}")
