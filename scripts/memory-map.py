#!/usr/bin/env python3
"""Sums a running daemon's resident memory by kind of mapping, from
/proc/PID/smaps, to see which allocator holds what (Linux).

Usage: scripts/memory-map.py PID   (one line; run it in a loop beside
`just soak` to follow the kinds over time)

The kinds are told apart by how each allocator maps memory: the eddy
binary and shared libraries are file-backed; mimalloc (Rust's allocations)
reserves 1 GiB arenas; glibc (C and C++: RocksDB, librdkafka) grows [heap]
and per-thread arenas of up to 64 MiB; thread stacks are 8 MiB; guest
slots of the pooling allocator are 2 MiB. A heuristic, good enough to say
which side grows.
"""
import re
import sys
import time


def kind(size_kib: int, name: str) -> str:
    if name.startswith("/"):
        return "binary+libs"
    if name == "[heap]":
        return "glibc heap"
    if name:
        return "other"
    if size_kib >= 1 << 20:
        return "mimalloc arenas"
    if size_kib in (8192, 8196):
        return "stacks"
    if size_kib == 2048:
        return "guest slots"
    if 4096 <= size_kib <= 65536:
        return "glibc heap"
    return "other anon"


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: memory-map.py PID")
    totals: dict[str, int] = {}
    current = None
    with open(f"/proc/{sys.argv[1]}/smaps") as smaps:
        for line in smaps:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$", line)
            if m:
                size_kib = (int(m[2], 16) - int(m[1], 16)) // 1024
                current = kind(size_kib, m[3].strip())
                totals.setdefault(current, 0)
            elif line.startswith("Rss:") and current is not None:
                totals[current] += int(line.split()[1])
    mib = {k: v / 1024 for k, v in totals.items()}
    parts = " ".join(f"{k}={v:.1f}" for k, v in sorted(mib.items(), key=lambda kv: -kv[1]))
    print(f"{time.strftime('%H:%M:%S')} RSS {sum(mib.values()):.1f} MiB: {parts}")


if __name__ == "__main__":
    main()
