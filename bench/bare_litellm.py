"""The baseline: a bare `litellm.acompletion` loop, run by bench/run.py as its own process.

It replays a JSONL file of requests (the exact messages, response_format and params that
agentctl sent in scenario A, read back from its run log) against the same fake server with
the same concurrency (one asyncio.Semaphore), and prints one JSON line on stdout:
calls, ok, errors, wall_s, per-call latency percentiles, and the CPU seconds spent importing
litellm.

    python bench/bare_litellm.py REQUESTS.jsonl --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from harness import import_litellm, pct_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("requests", help="JSONL: one {model, messages, params, response_format} per line")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    litellm, import_cpu_s = import_litellm()  # timed: every litellm program pays this once

    latencies: list[float] = []  # acompletion start -> return, ok calls, seconds
    with open(args.requests, encoding="utf-8") as fh:
        requests = [json.loads(line) for line in fh if line.strip()]

    async def run_all() -> tuple[int, list[str]]:
        sem = asyncio.Semaphore(args.concurrency)
        errors: list[str] = []

        async def one(req: dict) -> bool:
            async with sem:
                t0 = time.perf_counter()
                try:
                    resp = await litellm.acompletion(
                        model=req["model"], messages=req["messages"],
                        response_format=req.get("response_format"),
                        num_retries=0, max_retries=0, **req.get("params", {}))
                    latencies.append(time.perf_counter() - t0)
                    json.loads(resp.choices[0].message.content)  # what any caller does next
                    return True
                except Exception as exc:  # counted, not raised: the loop must finish
                    errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                    return False

        results = await asyncio.gather(*(one(r) for r in requests))
        return sum(results), errors

    t0 = time.perf_counter()
    ok, errors = asyncio.run(run_all())
    wall_s = time.perf_counter() - t0
    ordered = sorted(latencies)
    print(json.dumps({"calls": len(requests), "ok": ok, "errors": len(errors),
                      "first_errors": errors[:3], "wall_s": round(wall_s, 3),
                      "ok_latency_ms_p50": pct_ms(ordered, 0.5), "ok_latency_ms_p99": pct_ms(ordered, 0.99),
                      "import_cpu_s": round(import_cpu_s, 3)}), flush=True)
    return 0 if ok == len(requests) else 1


if __name__ == "__main__":
    sys.exit(main())
