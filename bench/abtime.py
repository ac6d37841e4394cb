"""Alternating whole-command timer (A, B, C, A, B, C, ...), as a library.

Adapted from `../shared/bench/baselines/abtime.py` (the timer that produced every figure in
BASELINES.md): each command runs through `bash -c` in its own session, in turn with the
other commands of its group, after `warmup` uncounted rounds, so that machine-speed drift
hits all of them alike. Wall time is measured around fork..wait4; CPU time and the peak RSS
of the largest reaped child come from wait4's rusage. Changes from the original: per-command
untimed `pre`/`post` steps may be Python callables, stdout is kept (for comparing outputs),
a command that fails in the warm-up round is dropped from the group with its reason (shown
as n/a) instead of being timed failing, a timeout kills the command's session, and the
ratio is taken against the group's ocifs command: median over rounds of ocifs_i / alt_i.
A command may also name a `versus` command (its own per-round ratio to that one) and a
`daemon_cpu` probe (the CPU its FUSE daemon used during each timed run).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Step = str | Callable[[], str | None] | None
"""An untimed step: a shell command (fails on non-zero exit) or a callable that returns
None on success or a reason string on failure."""


@dataclass
class Cmd:
    label: str
    shell: str
    role: str = "alt"  # "ocifs" (the subject) or "alt"
    pre: Step = None
    post: Step = None
    na: str | None = None  # set up front when the command cannot run
    ref: bool = False  # its stdout is the reference the ocifs stdout must equal
    #: CPU seconds its daemon has used so far, read before and after each timed run
    #: (the daemon is not a child of the command, so wait4's rusage misses it)
    daemon_cpu: Callable[[], float | None] | None = None
    #: label of another command of the group this one's per-round ratio is also
    #: taken against (e.g. a second ocifs variant against the native command)
    versus: str | None = None


@dataclass
class Result:
    wall: float
    cpu: float
    maxrss_kib: int
    rc: int
    stdout: str
    stderr: str
    round: int = 0
    daemon_cpu: float | None = None


@dataclass
class Group:
    workload: str
    name: str
    title: str
    cmds: list[Cmd]
    bytes: int | None = None
    setup: Callable[[], None] | None = None
    teardown: Callable[[], None] | None = None
    results: dict[str, list[Result]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    rounds_done: int = 0


def run_step(step: Step, timeout: float) -> str | None:
    if step is None:
        return None
    if callable(step):
        try:
            return step()
        except Exception as exc:  # a failed step marks the command n/a, never crashes
            return f"{type(exc).__name__}: {exc}"
    try:
        r = subprocess.run(["bash", "-c", step], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"step timed out after {timeout:.0f} s: {step[:120]}"
    if r.returncode != 0:
        return f"exit {r.returncode}: {(r.stderr or r.stdout).decode(errors='replace')[-300:]}"
    return None


def run_once(cmd: str, timeout: float) -> Result:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        p = subprocess.Popen(["bash", "-c", cmd], stdin=subprocess.DEVNULL, stdout=out,
                             stderr=err, start_new_session=True)
        timed_out = []

        def kill() -> None:
            timed_out.append(True)
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        t1 = time.monotonic()
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read(4096).decode(errors="replace")
        stderr = err.read().decode(errors="replace")[-600:]
    rc = p.returncode
    if timed_out:
        rc = 124
        stderr = f"timed out after {timeout:.0f} s; " + stderr
    return Result(t1 - t0, ru.ru_utime + ru.ru_stime, ru.ru_maxrss, rc, stdout.strip(), stderr)


def run_group(g: Group, rounds: int, warmup: int, timeout: float,
              budget: float | None = None, log: Callable[[str], None] | None = None) -> Group:
    """Run the group; fills g.results (timed rounds only) and marks failing commands n/a."""
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    live = [c for c in g.cmds if c.na is None]
    g.results = {c.label: [] for c in g.cmds}
    if not live:
        return g
    if g.setup:
        try:
            g.setup()
        except Exception as exc:
            for c in live:
                c.na = f"group setup failed: {exc}"
            return g
    try:
        total = warmup + rounds
        i = 0
        t_round0 = time.monotonic()
        while i < total:
            for c in g.cmds:
                if c.na is not None:
                    continue
                why = run_step(c.pre, timeout)
                if why:
                    c.na = f"setup failed: {why}"
                    continue
                cpu0 = c.daemon_cpu() if c.daemon_cpu else None
                r = run_once(c.shell, timeout)
                cpu1 = c.daemon_cpu() if c.daemon_cpu else None
                if cpu0 is not None and cpu1 is not None:
                    r.daemon_cpu = cpu1 - cpu0
                why = run_step(c.post, timeout)
                if r.rc != 0 or why:
                    reason = (f"exit {r.rc}: {r.stderr.strip()[-300:]}" if r.rc != 0
                              else f"check failed: {why}")
                    if i < warmup or not g.results[c.label]:
                        c.na = reason
                    else:
                        g.notes.append(f"{c.label} round {i - warmup + 1}: {reason}")
                    continue
                if r.stderr.strip():  # succeeded but complained: keep the figure, say so
                    last = r.stderr.strip().splitlines()[-1][:200]
                    note = f"{g.name}: {c.label} wrote to stderr (exit 0): {last}"
                    if note not in g.notes:
                        g.notes.append(note)
                if i >= warmup:
                    r.round = i - warmup
                    g.results[c.label].append(r)
            i += 1
            if i == warmup + 1 and budget and total > i:
                # keep the whole run bounded: fewer rounds for a group that is slow here
                per_round = time.monotonic() - t_round0
                per_round /= max(1, i)
                fit = int(budget // max(per_round, 1e-9))
                if fit < total:
                    new_total = max(warmup + min(rounds, 3), fit)
                    if new_total < total:
                        g.notes.append(f"rounds cut from {rounds} to {new_total - warmup} "
                                       f"to stay within the {budget:.0f} s group budget")
                        total = new_total
            if not any(c.na is None for c in g.cmds):
                break
        g.rounds_done = max(0, i - warmup)
    finally:
        if g.teardown:
            try:
                g.teardown()
            except Exception as exc:
                g.notes.append(f"teardown: {exc}")
    return g


def summarize(g: Group) -> list[dict]:
    """One row per command: median/min/max wall, MiB/s, ratio ocifs / this command."""
    subject = next((c for c in g.cmds if c.role == "ocifs"), None)
    sres = g.results.get(subject.label, []) if subject else []
    rows = []
    for c in g.cmds:
        res = g.results.get(c.label, [])
        row: dict = {"workload": g.workload, "group": g.name, "title": g.title,
                     "label": c.label, "role": c.role, "cmd": c.shell}
        if c.na is not None or not res:
            row["na"] = c.na or "no successful round"
            rows.append(row)
            continue
        walls = [r.wall for r in res]
        med = statistics.median(walls)
        row.update({
            "runs": len(res), "walls": [round(w, 4) for w in walls],
            "wall_median": round(med, 4), "wall_min": round(min(walls), 4),
            "wall_max": round(max(walls), 4),
            "cpu_median": round(statistics.median(r.cpu for r in res), 4),
            "maxrss_mib": round(max(r.maxrss_kib for r in res) / 1024, 1),
            "stdout": res[-1].stdout[:200],
        })
        cpus = [r.daemon_cpu for r in res if r.daemon_cpu is not None]
        if cpus:
            row["daemon_cpu_median"] = round(statistics.median(cpus), 3)
        if c.versus and g.results.get(c.versus):
            other = {r.round: r for r in g.results[c.versus]}
            vs = [r.wall / other[r.round].wall for r in res if r.round in other]
            if vs:
                row["ratio_versus"] = {"label": c.versus, "median": round(statistics.median(vs), 3),
                                       "range": [round(min(vs), 3), round(max(vs), 3)]}
        if g.bytes:
            row["bytes"] = g.bytes
            row["mib_s_median"] = round(g.bytes / med / 2**20, 1)
            row["mib_s_range"] = [round(g.bytes / max(walls) / 2**20, 1),
                                  round(g.bytes / min(walls) / 2**20, 1)]
        if subject and c is not subject and sres and subject.na is None:
            # pair round k of the subject with round k of this command (same round)
            by_round = {r.round: r for r in res}
            ratios = [s.wall / by_round[s.round].wall for s in sres if s.round in by_round]
            if ratios:
                row["ratio_ocifs_over_this"] = round(statistics.median(ratios), 3)
                row["ratio_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
            row["stdout_equal_ocifs"] = (res[-1].stdout == sres[-1].stdout)
        rows.append(row)
    return rows
