"""Python tools for the tool-loop and action tests, used as ``python`` tools in test specs
(``function: "agentctl_test_toolbox:nap"``, ``path:`` this folder).

Tools that record what happened append JSON lines to files in ``$TOOLBOX_DIR``, so a test can
count calls made inside another process (a killed ``agentctl`` included).
"""

import json
import os
import time
from pathlib import Path

from agentctl.tools.base import ToolContext

RELEASE_WAIT_S = 60.0


def _dir() -> Path:
    return Path(os.environ["TOOLBOX_DIR"])


def _append(name: str, record: dict) -> None:
    with open(_dir() / name, "a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _hang_first_call(item: str = "") -> None:
    """The first call of all (across processes) creates ``hung`` (holding its item) and then
    waits for ``release``.

    The runner flushes the action's intent row before it calls the tool, so once ``hung``
    exists the test knows it can kill the process inside the intent -> done window."""
    try:
        fd = os.open(_dir() / "hung", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, item.encode())
    os.close(fd)
    deadline = time.monotonic() + RELEASE_WAIT_S
    while not (_dir() / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def nap(tag: str, seconds: float = 0.3) -> dict:
    """Sleep, and record when the call started and ended."""
    start = time.time()
    time.sleep(seconds)
    _append("naps.jsonl", {"tag": tag, "start": start, "end": time.time()})
    return {"tag": tag, "slept": seconds}


def explode(reason: str) -> str:
    """Always raises ValueError."""
    raise ValueError(f"cannot handle {reason}")


def big(chars: int) -> str:
    """A text of exactly ``chars`` characters."""
    return ("0123456789" * (chars // 10 + 1))[:chars]


def apply_once(item: str, ctx: ToolContext) -> dict:
    """A side effect that deduplicates by the runner's idempotency key (it takes a ToolContext).

    The effect is applied before the first call hangs: the worst window, where the effect
    happened but the ledger still says `intent`."""
    key = ctx.idempotency_key
    _append("invocations.jsonl", {"item": item, "key": key, "pid": os.getpid()})
    effects = _dir() / "effects.jsonl"
    seen = {json.loads(line)["key"] for line in effects.read_text().splitlines()} if effects.exists() else set()
    if key not in seen:
        _append("effects.jsonl", {"item": item, "key": key})
    _hang_first_call(item)
    return {"item": item, "applied": True, "deduplicated": key in seen}


def apply_blind(item: str) -> dict:
    """A side effect that cannot deduplicate (no ToolContext): every call applies it again."""
    _append("invocations.jsonl", {"item": item, "pid": os.getpid()})
    _append("effects.jsonl", {"item": item})
    _hang_first_call(item)
    return {"item": item, "applied": True}
