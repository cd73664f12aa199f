"""`agentctl plan`: run a small sample for real, then project calls, tokens, cost and time
for the whole input, per stage and model."""

from __future__ import annotations

from typing import Any

from agentctl.stages import stage_type


def project(sample: dict[str, Any], *, total_items: int, sample_items: int, spec,
            concurrency: int) -> dict[str, Any]:
    """`sample` is `inspect_run` data for the sample run."""
    scale = total_items / max(sample_items, 1)
    reach: dict[str, float] = {}   # projected number of items each stage runs for
    stages_out = []
    totals = {"llm_calls": 0.0, "input_tokens": 0.0, "output_tokens": 0.0, "cost_usd": 0.0,
              "unpriced_calls": 0.0, "call_seconds": 0.0}
    by_model: dict[str, dict[str, float]] = {}
    sample_ok = {s["id"]: s["ok"] for s in sample["stages"]}
    for s in sample["stages"]:
        stage = spec.pipeline.stage(s["id"])
        kind = stage_type(stage)
        upstream = min((reach.get(n, total_items) for n in stage.needs), default=total_items)
        # what reached this stage in the sample: its upstreams' ok cells (a select upstream
        # has already capped `upstream`, so its filtering must not be counted twice)
        sample_reached = (max(min(sample_ok.get(n, sample_items) for n in stage.needs), 1)
                          if stage.needs else max(sample_items, 1))
        p = kind.project(stage, s, upstream, sample_reached, spec=spec)
        reach[s["id"]] = p.reach
        if not kind.calls_models:
            stages_out.append({"id": s["id"], "kind": kind.kind, "items": round(p.items, 1)})
            continue
        calls, tin, tout, cost, unpriced = (p.llm_calls, p.input_tokens, p.output_tokens,
                                            p.cost_usd, p.unpriced_calls)
        latency_s = (s["p50_ms"] or 0) / 1000
        row = {"id": s["id"], "kind": kind.kind, "items": round(p.items, 1), "llm_calls": round(calls),
               "input_tokens": round(tin), "output_tokens": round(tout),
               "cost_usd": None if unpriced and not cost else round(cost, 4),
               "unpriced_calls": round(unpriced), "models": s["models"],
               "p50_latency_s": round(latency_s, 3)}
        stages_out.append(row)
        totals["llm_calls"] += calls
        totals["input_tokens"] += tin
        totals["output_tokens"] += tout
        totals["cost_usd"] += cost
        totals["unpriced_calls"] += unpriced
        totals["call_seconds"] += calls * latency_s
        for m in s["models"] or ["?"]:
            agg = by_model.setdefault(m, {"llm_calls": 0, "input_tokens": 0, "output_tokens": 0,
                                          "cost_usd": 0.0})
            share = 1 / max(len(s["models"]), 1)
            agg["llm_calls"] += round(calls * share)
            agg["input_tokens"] += round(tin * share)
            agg["output_tokens"] += round(tout * share)
            agg["cost_usd"] += cost * share
    est_wall = totals["call_seconds"] / max(concurrency, 1)
    return {
        "sample_run_id": sample["run_id"], "sample_items": sample_items, "total_items": total_items,
        "scale": round(scale, 2), "mock": sample["mock"], "concurrency": concurrency,
        "stages": stages_out,
        "models": {m: {**v, "cost_usd": round(v["cost_usd"], 4)} for m, v in by_model.items()},
        "totals": {"llm_calls": round(totals["llm_calls"]), "input_tokens": round(totals["input_tokens"]),
                   "output_tokens": round(totals["output_tokens"]),
                   "cost_usd": None if totals["unpriced_calls"] and not totals["cost_usd"]
                   else round(totals["cost_usd"], 4),
                   "unpriced_calls": round(totals["unpriced_calls"]),
                   "estimated_wall_s": round(est_wall, 1)},
        "note": "projection from a sample; select stages cap downstream counts at their top K; "
                "wall time assumes the concurrency limit is the bottleneck (rate limits may add more)",
    }
