"""A `distill-ray` command run as a measured job: a subprocess in its own session with its own temp dir (so its
local Ray cluster is its own, and findable), whose processes' peak RSS is sampled every 0.5 s while it runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
MB = 1 << 20


def sample_rss(pid: int, peaks: dict, stop: threading.Event, sink: str, starts: dict[str, set]) -> None:
    """Peak RSS of the driver, of the sink actor (its class name in the process title: ``sink``), of the verifier
    actor, of the largest other process (and its title), and of all of them together; ``starts``: the pids seen
    per marker in a process title (how many processes of that kind the job started).

    Every 5 s, also the sink's and the verifier's private memory and the object-store pages they map
    (``/dev/shm/plasma*``): RSS, and USS too, count those pages, which the object store owns (shared, bounded by
    its capacity) and which a reader maps as it reads blocks."""
    tick = 0
    while not stop.is_set():
        try:
            root = psutil.Process(pid)
            procs = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            return
        total = 0
        for p in procs:
            try:
                rss, name = p.memory_info().rss, " ".join(p.cmdline()[:2])
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += rss
            for marker, pids in starts.items():
                if marker in name:
                    pids.add(p.pid)
            key = ("driver" if p.pid == pid else "sink" if sink in name else "verifier" if "VerifierActor" in name
                   else "worker_max")
            if key == "worker_max" and rss > peaks.get("worker_max", 0):
                peaks["worker_max_name"] = name[:80]
            peaks[key] = max(peaks.get(key, 0), rss)
            if key in ("sink", "verifier") and tick % 10 == 0:
                _sample_maps(p, key, peaks)
        peaks["all"] = max(peaks.get("all", 0), total)
        tick += 1
        stop.wait(0.5)


def _sample_maps(p: psutil.Process, key: str, peaks: dict) -> None:
    try:
        maps = p.memory_maps()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return
    plasma = [m.path.startswith("/dev/shm/plasma") for m in maps]
    private = sum(m.private_clean + m.private_dirty for m, shm in zip(maps, plasma) if not shm)
    mapped = sum(m.rss for m, shm in zip(maps, plasma) if shm)
    peaks[f"{key}_private"] = max(peaks.get(f"{key}_private", 0), private)
    peaks[f"{key}_object_store"] = max(peaks.get(f"{key}_object_store", 0), mapped)


@dataclass
class Job:
    """``Job.launch(args, sink=...)``, then ``wait()`` (or ``kill()``); ``peaks`` in bytes, ``starts`` the pids
    seen per marker."""
    proc: subprocess.Popen
    tmpdir: str
    began: float
    peaks: dict = field(default_factory=dict)
    starts: dict = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    sampler: threading.Thread | None = None

    @classmethod
    def launch(cls, args: list[str], sink: str, markers: tuple[str, ...] = ()) -> "Job":
        # Its own short temp dir (Ray's socket paths must stay < 108 bytes): the marker its Ray processes carry.
        tmpdir = tempfile.mkdtemp(prefix="job", dir="/tmp")
        env = {**os.environ, "DISTILL_RAY_PROGRESS": "0", "TMPDIR": tmpdir}
        env.pop("RAY_ADDRESS", None)
        proc = subprocess.Popen([sys.executable, "-m", "distill_ray.cli", *args], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        job = cls(proc, tmpdir, time.perf_counter(), starts={marker: set() for marker in markers})
        job.sampler = threading.Thread(target=sample_rss, args=(proc.pid, job.peaks, job.stop, sink, job.starts),
                                       daemon=True)
        job.sampler.start()
        return job

    def wait(self) -> float:
        """The job's wall seconds; RuntimeError with its stderr's tail if it failed."""
        _, err = self.proc.communicate()
        wall = time.perf_counter() - self.began
        self.stop.set()
        self.sampler.join()   # its last sample is in before anyone reads the peaks
        if self.proc.returncode:
            raise RuntimeError(f"job failed:\n{err[-3000:]}")
        return wall

    def peaks_mb(self) -> dict[str, float]:
        return {key: value / MB if isinstance(value, (int, float)) else value for key, value in self.peaks.items()}

    def kill(self) -> None:
        """SIGKILL the job's session and every process of its Ray cluster (found by its temp dir)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.stop.set()
        self.sampler.join()
        for p in psutil.process_iter(["cmdline"]):
            if self.tmpdir in " ".join(p.info["cmdline"] or []):
                p.kill()
