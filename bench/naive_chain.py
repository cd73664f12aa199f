"""The naive chain: what a hand-written asyncio script would do with the bench pipeline.

Run by bench/run.py as its own process, against the same fake server as the "tail" scenario.
It reads a JSONL file with one line per account, that account's requests in stage order
(research -> score -> write, exactly as agentctl sent them in the tail run, read back from its
run log), and:

  chain (default)  launches every account at once; each account sends its requests one after
                   another, awaiting and parsing each reply before the next, and every call
                   acquires ONE shared asyncio.Semaphore(C). No priorities, no scheduler.
  --barrier        stage by stage: all accounts' first request, wait for all, then the second...
  --agentctl-transport  litellm configured as agentctl configures it (its own HTTP handler for
                   OpenAI-compatible calls instead of the openai SDK's client): shows how much of
                   agentctl's lead is that choice rather than its scheduling

Replaying agentctl's requests (rather than re-rendering the prompts here) keeps the bodies
byte-identical without copying agentctl's prompt code; since the fake server's answer is a
hash of the prompt, a chain that built each prompt from the previous reply would send the
same requests. Prints one JSON line: calls, ok, errors, wall_s, latency percentiles, the
slot occupancy timeline (report.occupancy) and the CPU seconds spent importing litellm.

    python bench/naive_chain.py CHAINS.jsonl --concurrency 64 [--barrier] [--agentctl-transport]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

from harness import import_litellm, pct_ms
from report import occupancy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chains", help="JSONL: one {item, requests: [{model, messages, params, "
                                       "response_format}, ...]} per account, in stage order")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--barrier", action="store_true", help="stage by stage instead of per-account chains")
    parser.add_argument("--agentctl-transport", action="store_true",
                        help="litellm's own HTTP handler, as agentctl runs it (default: litellm's defaults)")
    args = parser.parse_args()
    if args.agentctl_transport:
        os.environ["EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER"] = "True"

    litellm, import_cpu_s = import_litellm()  # timed: every litellm program pays this once

    with open(args.chains, encoding="utf-8") as fh:
        chains = [json.loads(line)["requests"] for line in fh if line.strip()]
    spans: list[tuple[float, float]] = []  # (start, end) of every ok call, perf_counter seconds
    errors: list[str] = []

    async def run_all() -> int:
        sem = asyncio.Semaphore(args.concurrency)

        async def one(req: dict) -> bool:
            async with sem:
                t0 = time.perf_counter()
                try:
                    resp = await litellm.acompletion(
                        model=req["model"], messages=req["messages"],
                        response_format=req.get("response_format"),
                        num_retries=0, max_retries=0, **req.get("params", {}))
                    spans.append((t0, time.perf_counter()))
                    json.loads(resp.choices[0].message.content)  # what the next step reads
                    return True
                except Exception as exc:  # counted, not raised: the loop must finish
                    errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                    return False

        async def chain(requests: list[dict]) -> int:
            done = 0
            for req in requests:
                if not await one(req):
                    break  # a real chain cannot go on without the previous answer
                done += 1
            return done

        if not args.barrier:
            return sum(await asyncio.gather(*(chain(c) for c in chains)))
        alive, ok = list(chains), 0
        for stage in range(max((len(c) for c in chains), default=0)):
            todo = [c for c in alive if stage < len(c)]
            results = await asyncio.gather(*(one(c[stage]) for c in todo))
            ok += sum(results)
            alive = [c for c, good in zip(todo, results) if good]
        return ok

    t0 = time.perf_counter()
    ok = asyncio.run(run_all())
    wall_s = time.perf_counter() - t0
    latencies = sorted(end - start for start, end in spans)
    calls = sum(len(c) for c in chains)
    print(json.dumps({"mode": "barrier" if args.barrier else "chain", "accounts": len(chains),
                      "calls": calls, "ok": ok, "errors": len(errors), "first_errors": errors[:3],
                      "wall_s": round(wall_s, 3),
                      "ok_latency_ms_p50": pct_ms(latencies, 0.5), "ok_latency_ms_p99": pct_ms(latencies, 0.99),
                      "occupancy": occupancy(spans, args.concurrency),
                      "import_cpu_s": round(import_cpu_s, 3)}), flush=True)
    return 0 if ok == calls else 1



if __name__ == "__main__":
    sys.exit(main())
