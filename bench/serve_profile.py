"""Sampling profiles of server processes during a benchmark window, with py-spy (when installed).

``start`` launches ``py-spy record --nonblocking`` (the process is not paused) on each pid after
the warm-up; ``finish`` waits for them and summarises each raw profile: the share of samples per
function, on the stack (inclusive) and at its top (self). Frames of C extensions and the kernel
are not seen: their time is counted to the Python frame that called them.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import threading
from pathlib import Path


def start(pids: dict[str, int], seconds: float, delay: float, outdir: Path, label: str) -> list:
    """Start one py-spy per ``{name: pid}`` after ``delay`` s; [] when py-spy is not installed."""
    here = Path(sys.executable).parent / "py-spy"  # a virtual environment's, not on PATH
    exe = str(here) if here.exists() else shutil.which("py-spy")
    if exe is None or seconds <= 0:
        return []
    jobs = []
    for name, pid in pids.items():
        path = outdir / f"profile_{label}_{name}.txt"
        cmd = [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", "200",
               "--format", "raw", "--nonblocking", "-o", str(path)]
        job = {"name": name, "path": path, "proc": None}

        def launch(job=job, cmd=cmd) -> None:
            job["proc"] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

        job["timer"] = threading.Timer(delay, launch)
        job["timer"].start()
        jobs.append(job)
    return jobs


def finish(jobs: list, top: int = 25) -> dict:
    """{name: {"samples", "self": [[pct, frame]...], "inclusive": [...], "file"} or {"error"}}."""
    out = {}
    for job in jobs:
        job["timer"].join()
        proc = job["proc"]
        err = proc.communicate(timeout=120)[1] if proc is not None else "not started"
        if not job["path"].exists():
            out[job["name"]] = {"error": (err or "no profile written").strip()[-500:]}
            continue
        own, incl, total = collections.Counter(), collections.Counter(), 0
        for line in job["path"].read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not stack or not n.isdigit():
                continue
            frames = stack.split(";")
            total += int(n)
            own[frames[-1]] += int(n)
            for f in set(frames):
                incl[f] += int(n)
        share = lambda c: [[round(v / total * 100, 1), f] for f, v in c.most_common(top)] if total else []  # noqa: E731
        out[job["name"]] = {"samples": total, "self": share(own), "inclusive": share(incl), "file": job["path"].name}
    return out
