"""Process plumbing for bench/run.py: the fake server as a separate process, and a child
process run with its own CPU time, peak RSS and wall clock measured by the kernel (wait4).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

# Never let a benchmark child reach a real provider or a proxy: loopback only.
_DROP_ENV = ("OPENAI_API_BASE", "OPENAI_BASE_URL", "OPENAI_ORGANIZATION", "OPENAI_PROJECT",
             "AGENTCTL_DB", "AGENTCTL_DEBUG", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
             "http_proxy", "https_proxy", "all_proxy")


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
    env.update(OPENAI_API_KEY="sk-bench", LITELLM_LOCAL_MODEL_COST_MAP="True",
               LITELLM_TELEMETRY="False", NO_PROXY="127.0.0.1,localhost",
               no_proxy="127.0.0.1,localhost", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class FakeServer:
    """`python -m tests.fakes.llm_server` in its own process (its CPU is not ours)."""

    def __init__(self, *, latency: float, seed: int, faults: dict[str, float] | None = None,
                 slow_rate: float = 0.0, slow_factor: float = 10.0, log_path: Path):
        self.latency, self.seed, self.faults = latency, seed, dict(faults or {})
        self.slow_rate, self.slow_factor = slow_rate, slow_factor  # the heavy tail, if any
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 30) -> "FakeServer":
        cmd = [PY, "-m", "tests.fakes.llm_server", "--port", "0", "--latency", str(self.latency),
               "--seed", str(self.seed)]
        for name, rate in self.faults.items():
            cmd += [f"--fault-{name}", str(rate)]
        if self.slow_rate:
            cmd += ["--slow-rate", str(self.slow_rate), "--slow-factor", str(self.slow_factor)]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=child_env(), stdout=subprocess.PIPE,
                                     stderr=self._log, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"fake server did not start (got {line!r}); see {self.log_path}")
        self.port = int(line.split()[1])
        return self

    def _http(self, method: str, path: str) -> dict:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=b"" if method == "POST" else None)
        with _NO_PROXY_OPENER.open(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict:
        return self._http("GET", "/stats")

    def reset(self) -> None:
        self._http("POST", "/reset")

    def cpu_s(self) -> float | None:
        """user+sys CPU so far, from /proc (Linux); None elsewhere."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError, AttributeError):
            return None

    def __enter__(self) -> "FakeServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()


@dataclass
class Measured:
    cmd: list[str]
    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_mb: float
    stdout: str
    stderr: str
    timed_out: bool = False
    started_epoch: float = 0.0   # wall-clock time of the spawn, to line up with the run log

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def run_measured(cmd: list[str], *, cwd: Path, timeout: float, out_dir: Path, name: str) -> Measured:
    """Run `cmd` to completion; the kernel's wait4 rusage gives the child's own CPU and RSS."""
    out_path, err_path = out_dir / f"{name}.stdout", out_dir / f"{name}.stderr"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        started_epoch, t0 = time.time(), time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=child_env(), stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL)
        timed_out = threading.Event()
        reaped = threading.Lock()

        def stop(sig: int) -> None:
            with reaped:
                if proc.returncode is None:
                    timed_out.set()
                    os.kill(proc.pid, sig)

        # Over time: Ctrl-C first (agentctl records the run as interrupted), then SIGKILL.
        timer = threading.Timer(timeout, stop, (signal.SIGINT,))
        killer = threading.Timer(timeout + 20, stop, (signal.SIGKILL,))
        timer.start()
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            with reaped:
                proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            timer.cancel()
            killer.cancel()
    rss_unit = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return Measured(cmd=cmd, returncode=proc.returncode, wall_s=wall, user_s=usage.ru_utime,
                    sys_s=usage.ru_stime, maxrss_mb=usage.ru_maxrss / rss_unit,
                    stdout=out_path.read_text(), stderr=err_path.read_text(),
                    timed_out=timed_out.is_set(), started_epoch=started_epoch)


def machine_busy_s() -> float | None:
    """CPU seconds all processes on the machine have used so far (Linux /proc/stat), or None.

    The delta over a scenario minus what our own processes used is CPU someone else took:
    on a shared 2-core box that, not agentctl, can be what stretches the wall clock."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def read_only(db: Path) -> Iterator[Any]:
    """A finished run's log, opened read-only (DuckDB is imported only by who needs it)."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        yield con
    finally:
        con.close()


# -- shared by the baseline scripts (bare_litellm.py, naive_chain.py) ------------------------

def import_litellm() -> tuple[Any, float]:
    """(litellm, CPU seconds its import took): every litellm program pays this once."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no price-map download
    cpu0 = time.process_time()
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    return litellm, time.process_time() - cpu0


def pct_ms(ordered: list[float], q: float) -> float | None:
    """The q-quantile (nearest rank) of sorted seconds, in milliseconds."""
    if not ordered:
        return None
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)
