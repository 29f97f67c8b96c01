#!/usr/bin/env python3
"""Write the linker's symbol ordering file for swiftvmm's release build.

    text-order.py MAP RIPS... > tools/startup.order

MAP is lld's -Map output of the binary that was traced; each RIPS file lists the
instruction addresses tools/steptrace executed in one start-up (first-execution
order). The output names, one per line, one symbol for every input section of
.text the start-up ran, in the order it first ran, small sections first: a
section holding one function moves as a unit, so what start-up runs becomes one
compact run of pages instead of ~100 64 KiB fault-around windows spread over
13 MiB of code. Sections larger than BIG (the Swift standard library's own .text
is one 1.5 MiB section) follow the small ones, since nothing inside them moves.
With several RIPS files, each is a phase: its new small sections, then its new
large ones.

Data cannot be ordered the same way: Swift emits no per-symbol data sections
(swiftc has -function-sections only), so each object's .rodata moves as one.

A symbol is used only if its name is unique in the map, so ordering it moves
exactly the section that was traced; sections without such a name are left
where they are (they are small local helpers, duplicated per object file).
"""
import bisect
import collections
import re
import sys

BIG = 4 * 1024
LINE = re.compile(r'^\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+( +)(.*)$')


def parse_map(path):
    """Input sections of every output section as (start, size, name, output, [symbols])."""
    sections, names = [], collections.Counter()
    level, output, current = None, None, None
    with open(path) as f:
        for line in f:
            m = LINE.match(line.rstrip('\n'))
            if not m:
                continue
            indent, name = len(m.group(3)), m.group(4)
            if level is None:
                level = indent
            if indent == level:
                output, current = name, None
            elif indent == level + 8:
                current = (int(m.group(1), 16), int(m.group(2), 16), name, output, [])
                sections.append(current)
            elif current is not None:
                current[4].append(name)
                names[name] += 1
    return sections, names


def main():
    if len(sys.argv) < 3:
        sys.exit('usage: text-order.py MAP RIPS...')
    sections, names = parse_map(sys.argv[1])
    text = sorted((s for s in sections if s[3] == '.text' and s[1] > 0), key=lambda s: s[0])
    starts = [s[0] for s in text]
    # One phase per RIPS file: its new small sections, then its new large ones, so a later
    # workload (serving the API) never sits between the plain run's code and its large sections.
    phases, seen = [], set()
    for rips in sys.argv[2:]:
        phase = []
        with open(rips) as f:
            for line in f:
                address = int(line, 16)
                index = bisect.bisect_right(starts, address) - 1
                if index < 0:
                    continue
                section = text[index]
                if address >= section[0] + section[1] or section[0] in seen:
                    continue
                seen.add(section[0])
                phase.append(section)
        phases.append(([s for s in phase if s[1] <= BIG], [s for s in phase if s[1] > BIG]))
    small = [s for p in phases for s in p[0]]
    large = [s for p in phases for s in p[1]]
    ordered = [s for p in phases for s in p[0] + p[1]]
    out, unnamed = [], 0
    for section in ordered:
        unique = [n for n in section[4] if names[n] == 1]
        if unique:
            out.append(unique[0])
        else:
            unnamed += 1
    print('\n'.join(out))
    print(f'text-order: {len(small)} small sections ({sum(s[1] for s in small) // 1024} KiB), '
          f'{len(large)} large ({sum(s[1] for s in large) // 1024} KiB), {unnamed} without a unique '
          f'symbol', file=sys.stderr)


if __name__ == '__main__':
    main()
