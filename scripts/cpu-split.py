#!/usr/bin/env python3
"""CPU per command of every process that serves a bench run, split by process.

Usage:
    scripts/cpu-split.py sample BENCH_PID OUT.jsonl   # every 0.2 s until killed
    scripts/cpu-split.py split OUT.jsonl [COMMANDS]   # per-process ms per command

Run `backoffice-worker bench --commands 20000 --reference` in the background
and `sample` with its pid. It reads /proc/<pid>/stat of every process and sums
CPU time (user + system) by group: the worker (the bench's `run` child), the
floor (`bench-reference-loop` child), the bench itself (publisher, event
consumer, in-process simulator), the PostgreSQL backends of the run's own
database (`pgmine`; its name is read from the children's configuration or
environment), other bench databases, RabbitMQ's beam.smp (shared by every
user of the broker: an upper bound) and everything else. `split` takes the
window in which the worker (or the floor) is busy and divides each group's
CPU by the commands. A backend that exits inside the window loses its CPU
(negative figures): read those runs' PostgreSQL figure as missing.
"""
import json
import os
import re
import sys
import time

TCK = os.sysconf("SC_CLK_TCK")

# Groups whose CPU is not the run's own (other sessions, other databases).
FOREIGN = ("beamother", "pgtest", "pgother", "other", "otherbw", "pgbench")
ORDER = ["worker", "ref", "bench", "pgmine", "pgaux", "beam", *FOREIGN]


def stat_of(pid):
    """(ppid, cpu ticks, comm) of a process, or None if it is gone."""
    try:
        st = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    close = st.rfind(")")
    fields = st[close + 2 :].split()
    return fields[1], int(fields[11]) + int(fields[12]), st[st.find("(") + 1 : close]


def cmdline_of(pid):
    try:
        raw = open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def learn_databases(pid, argv, known):
    """The run's database names, from a child's environment or config file."""
    try:
        text = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")
        if "--config" in argv:
            text += open(argv[argv.index("--config") + 1]).read()
    except (OSError, IndexError):
        return
    known.update(re.findall(r"bench_[0-9a-f]{32}", text))


def group(pid, bench, known):
    stat = stat_of(pid)
    if stat is None:
        return None, 0
    ppid, cpu, comm = stat
    cmd = cmdline_of(pid)
    argv = cmd.split()
    sub = argv[1] if len(argv) > 1 else ""
    if pid == bench:
        return "bench", cpu
    if ppid == bench:
        learn_databases(pid, argv, known)
        if sub == "run":
            return "worker", cpu
        if sub == "bench-reference-loop":
            return "ref", cpu
    if cmd.startswith("postgres:"):
        if any(p in known for p in argv):
            return "pgmine", cpu
        if any(p.startswith("bench_") for p in argv):
            return "pgbench", cpu
        if any(p.startswith("bwtest_") for p in argv):
            return "pgtest", cpu
        if len(argv) > 3 and argv[2] == "postgres":
            return "pgother", cpu
        return "pgaux", cpu
    if "beam" in comm:
        return ("beam" if "/var/lib/rabbitmq" in cmd else "beamother"), cpu
    if argv and "backoffice" in argv[0]:
        return "otherbw", cpu
    return "other", cpu


def sample(bench, path):
    known = set()
    with open(path, "w") as out:
        while os.path.exists(f"/proc/{bench}"):
            row = {"t": time.time()}
            for pid in filter(str.isdigit, os.listdir("/proc")):
                name, cpu = group(pid, bench, known)
                if name is not None:
                    row[name] = row.get(name, 0) + cpu
            with open("/proc/stat") as s:
                ticks = [int(x) for x in s.readline().split()[1:8]]
            row["total"], row["idle"] = sum(ticks), ticks[3] + ticks[4]
            out.write(json.dumps(row) + "\n")
            out.flush()
            time.sleep(0.2)


def split(path, commands):
    rows = [json.loads(line) for line in open(path)]
    for proc in ("worker", "ref"):
        busy = [
            i
            for i in range(1, len(rows))
            if proc in rows[i] and proc in rows[i - 1] and rows[i][proc] - rows[i - 1][proc] > 2
        ]
        if not busy:
            continue
        a, b = rows[busy[0] - 1], rows[busy[-1]]
        seconds = b["t"] - a["t"]
        line = f"{proc:6s} window {seconds:5.2f} s, ms per command:"
        own = 0.0
        for name in ORDER:
            ms = (b.get(name, 0) - a.get(name, 0)) * 1000 / TCK / commands
            if abs(ms) > 0.0005:
                line += f" {name}={ms:.3f}"
                own += 0 if name in FOREIGN else ms
        cores = ((b["total"] - a["total"]) - (b["idle"] - a["idle"])) / TCK / seconds
        print(f"{line} | own sum {own:.3f} | machine {cores:.2f} cores busy")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "sample":
        sample(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 3 and sys.argv[1] == "split":
        split(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 20000)
    else:
        sys.exit(__doc__)
