"""Pure functions that turn data into Rich renderables. Only the CLI prints them."""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from agentctl.engine.progress import RunProgress

STATUS_STYLE = {"ok": "green", "failed": "red", "skipped": "yellow", "filtered": "dim",
                "awaiting_approval": "magenta", "running": "cyan", "completed": "green",
                "completed_with_errors": "yellow", "interrupted": "red", "budget_exceeded": "red",
                "awaiting_approval_run": "magenta", "refused": "yellow", "withdrawn": "dim"}
GLYPH = {"ok": "✓", "failed": "✗", "skipped": "↷", "filtered": "·", "awaiting_approval": "⏸"}


def money(cost: float | None, unpriced: int = 0, *, mock: bool = False) -> str:
    if mock:
        return "$0 (mock)"
    if cost is None or (unpriced and not cost):
        return "unpriced" if unpriced else "$0"
    if 0 < cost < 0.0001:  # a cheap turn is not $0.0000: its first significant digit
        text = f"${cost:.{min(8, -math.floor(math.log10(cost)))}f}"
    else:
        text = f"${cost:,.4f}" if cost < 1 else f"${cost:,.2f}"
    return f"{text} +{unpriced} unpriced" if unpriced else text


def tokens(n: int | None) -> str:
    n = int(n or 0)
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e4 else str(n)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


def progress_table(progress: RunProgress, *, title: str | None = None) -> Table:
    t = Table(title=title, title_justify="left", expand=False)
    for col in ("stage", "done", "ok", "failed", "skipped", "in flight", "calls", "tokens", "cost"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    total = progress.items_total
    for c in progress.stages.values():
        done = f"{c.done}/{total}" if total is not None else str(c.done)
        t.add_row(Text(c.stage_id + (f" [{c.kind}]" if c.kind != "agent" else "")), done,
                  str(c.ok), _red(c.failed), str(c.skipped + c.filtered), str(c.in_flight),
                  str(c.calls), tokens(c.input_tokens + c.output_tokens),
                  money(c.cost_usd, c.unpriced_calls, mock=progress.mock))
    waiting = progress.waiting_note()
    t.caption = (f"elapsed {duration(progress.elapsed)}"
                 + ("  ·  MOCK MODEL (offline, no cost)" if progress.mock else "")
                 + (f"  ·  {waiting}" if waiting else ""))
    return t


def _red(n: int) -> str | Text:
    return Text(str(n), style="red") if n else "0"


def run_summary(outcome: dict[str, Any]) -> Group:
    status = outcome["status"]
    head = Text.assemble(("run ", "bold"), (outcome["run_id"], "bold cyan"), "  ",
                         (status, STATUS_STYLE.get(status, "")),
                         ("  [mock model]" if outcome.get("mock") else "", "magenta"))
    t = Table(expand=False)
    awaiting = any(s.get("awaiting_approval") for s in outcome["stages"])
    cols = ["stage", "ok", "failed", "skipped", "filtered"] + (["awaiting"] if awaiting else []) + [
        "calls", "tokens in/out", "cost"]
    for col in cols:
        t.add_column(col, justify="left" if col == "stage" else "right")
    for s in outcome["stages"]:
        row = [s["id"], str(s["ok"]), _red(s["failed"]), str(s["skipped"]), str(s["filtered"])]
        if awaiting:
            row.append(Text(str(s["awaiting_approval"]), style="magenta") if s["awaiting_approval"] else "0")
        row += [str(s["llm_calls"]), f"{tokens(s['input_tokens'])}/{tokens(s['output_tokens'])}",
                money(s["cost_usd"], s["unpriced_calls"], mock=outcome.get("mock", False))]
        t.add_row(*row)
    tot = outcome["totals"]
    foot = Text(f"{tot['items']} accounts · {tot['llm_calls']} LLM calls · "
                f"{tot['tool_calls']} tool calls · {tokens(tot['input_tokens'])} in / "
                f"{tokens(tot['output_tokens'])} out · "
                f"{money(tot['cost_usd'], tot.get('unpriced_calls', 0), mock=outcome.get('mock', False))}"
                f" · {duration(outcome.get('elapsed_s'))}")
    parts: list[Any] = [head, t, foot, *rate_limit_lines(tot.get("rate_limits"))]
    parts += note_lines(tot.get("notes"), outcome["run_id"])
    if outcome.get("error"):
        parts.append(Text(f"error: {outcome['error']}", style="red"))
    if status == "awaiting_approval":
        parts.append(Text(f"side-effect actions wait for approval: agentctl review {outcome['run_id']}, "
                          f"then agentctl approve {outcome['run_id']} --all (or --items/--where) "
                          f"and agentctl resume {outcome['run_id']}", style="magenta"))
    parts.append(Text(f"details: agentctl inspect {outcome['run_id']}", style="dim"))
    return Group(*parts)


def note_lines(notes: list[str] | None, run_id: str) -> list[Text]:
    """What a retry did that a reader must know (actions withdrawn, or taken and not undoable,
    for accounts a fan-in no longer lets through)."""
    notes = notes or []
    lines = [Text(f"note: {note}", style="yellow") for note in notes[:20]]
    if len(notes) > 20:
        lines.append(Text(f"note: {len(notes) - 20} more in `agentctl inspect {run_id} --json` "
                          "(notes)", style="yellow"))
    return lines


def rate_limit_lines(lanes: list[dict[str, Any]] | None) -> list[Text]:
    """One line per lane a provider pushed back on (429s): how the run gave way."""
    lines = []
    for lane in lanes or []:
        n = lane["rate_limited"]
        what = [f"{n} 429 {'reply' if n == 1 else 'replies'}"]
        if lane["concurrency_cuts"]:
            what.append(f"concurrency cut {lane['concurrency_cuts']}x, to {lane['lowest_concurrency']} "
                        f"at the lowest (of {lane['concurrency']}; {lane['concurrency_at_end']} at the end)")
        if lane["pauses"]:
            what.append(f"paused {lane['pauses']}x for {lane['paused_s']:g} s in all")
        lines.append(Text(f"rate limits, {lane['lane']}: " + ", ".join(what), style="yellow"))
    return lines


def runs_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(expand=False)
    for col in ("run id", "pipeline", "status", "started (UTC)", "duration", "items", "calls", "cost"):
        t.add_column(col, justify="right" if col in ("items", "calls", "cost", "duration") else "left",
                     no_wrap=col in ("run id", "started (UTC)"), min_width=24 if col == "run id" else None)
    for r in rows:
        t.add_row(r["run_id"], Text(r["pipeline"] + (" (mock)" if r.get("mock") else "")
                                    + (" (plan sample)" if r.get("plan_sample") else "")),
                  Text(r["status"] + (" (stale: crashed? `agentctl resume`)" if r.get("stale") else ""),
                       style=STATUS_STYLE.get(r["status"], "")),
                  str(r["started_at"])[:19], duration(r.get("duration_s")), str(r["items"]),
                  str(r["calls"]), money(r["cost_usd"], r.get("unpriced_calls", 0),
                                         mock=bool(r.get("mock"))))
    if not rows:
        t.caption = "no runs yet: try `agentctl run pipelines/outbound.yaml sample_data/accounts.csv --mock`"
    return t


def inspect_view(data: dict[str, Any], *, grid_rows: int = 40) -> Group:
    parts: list[Any] = []
    status = data["status"]
    parts.append(Text.assemble(("run ", "bold"), (data["run_id"], "bold cyan"), "  ",
                               (data["pipeline"], "bold"), "  ",
                               (status, STATUS_STYLE.get(status, "")),
                               ("  [mock model]" if data.get("mock") else "", "magenta"),
                               ("  [agentctl plan's sample]" if data.get("plan_sample") else "", "magenta")))
    parts.append(Text(f"started {data['started_at']}  ended {data['ended_at'] or '-'}  "
                      f"input {data['input_path']}", style="dim"))
    if data.get("error"):
        parts.append(Text(f"error: {data['error']}", style="red"))
    if data.get("stale"):
        parts.append(Text("this run stopped heartbeating while running (crashed or killed); "
                          f"continue it with: agentctl resume {data['run_id']}", style="yellow"))
    elif status == "running":
        parts.append(Text("live: this run is still in progress", style="cyan"))
    t = Table(title="stages", title_justify="left")
    awaiting = any(s.get("awaiting_approval") for s in data["stages"])
    for col in ("stage", "ok", "failed", "skipped", "filtered") + (("awaiting",) if awaiting else ()) + (
            "calls", "tools", "tokens in/out", "cost", "p50", "p95", "models"):
        t.add_column(col, justify="left" if col in ("stage", "models") else "right")
    for s in data["stages"]:
        notes = [f"{n} {what}" for n, what in ((s["denied_tool_calls"], "denied"),
                                                (s.get("tool_errors", 0), "failed")) if n]
        tools = str(s["tool_calls"]) + (f" ({', '.join(notes)})" if notes else "")
        extra = [str(s["awaiting_approval"])] if awaiting else []
        label = s["id"] + (f" [{s['kind']}]" if s.get("kind", "agent") != "agent" else "")
        t.add_row(Text(label), str(s["ok"]), _red(s["failed"]), str(s["skipped"]), str(s["filtered"]),
                  *extra, str(s["llm_calls"]), tools, f"{tokens(s['input_tokens'])}/{tokens(s['output_tokens'])}",
                  money(s["cost_usd"], s["unpriced_calls"], mock=data.get("mock", False)),
                  _ms(s["p50_ms"]), _ms(s["p95_ms"]), ", ".join(s["models"]))
    tot = data["totals"]
    t.caption = (f"{tot['items']} accounts · {tot['llm_calls']} LLM calls · {tot['tool_calls']} tool calls · "
                 f"{money(tot['cost_usd'], tot['unpriced_calls'], mock=data.get('mock', False))}")
    parts.append(t)
    parts.extend(rate_limit_lines(data.get("rate_limits")))
    parts.extend(note_lines(data.get("notes"), data["run_id"]))
    if data.get("run_outputs") and not data.get("detail"):
        parts.extend(run_outputs_view(data["run_outputs"], mock=data.get("mock", False)))
    if data.get("detail"):
        parts.extend(detail_view(data["detail"], kinds={s["id"]: s.get("kind", "agent")
                                                        for s in data["stages"]},
                                 mock=data.get("mock", False)))
        return Group(*parts)
    parts.append(status_grid(data, limit=grid_rows))
    if data["top_errors"]:
        e = Table(title="top errors", title_justify="left")
        for col in ("stage", "type", "count", "example", "error"):
            e.add_column(col)
        for err in data["top_errors"]:
            e.add_row(err["stage_id"], err["error_type"] or "", str(err["count"]),
                      Text(err["example_item"] or ""), Text((err["error"] or "")[:160]))
        parts.append(e)
    if data["call_errors"]:
        e = Table(title="failed LLM attempts (retried or final)", title_justify="left")
        for col in ("stage", "type", "count"):
            e.add_column(col)
        for err in data["call_errors"]:
            e.add_row(err["stage_id"] or "", err["error_type"] or "", str(err["count"]))
        parts.append(e)
    if data["denied_tool_calls"]:
        d = Table(title="denied tool calls", title_justify="left")
        for col in ("item", "stage", "agent", "tool", "arguments"):
            d.add_column(col)
        for x in data["denied_tool_calls"]:
            d.add_row(Text(x["item_key"] or ""), x["stage_id"], x["agent"], Text(x["tool"]),
                      Text(json.dumps(x["arguments"])[:80]))
        parts.append(d)
    parts.append(Text(f"drill down: agentctl inspect {data['run_id']} --item KEY | --stage ID", style="dim"))
    return Group(*parts)


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1000:.2f}s" if v >= 1000 else f"{v:.0f}ms"


def plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


def status_grid(data: dict[str, Any], *, limit: int) -> Table:
    ids = [s["id"] for s in data["stages"]]
    g = Table(title="accounts × stages", title_justify="left")
    g.add_column("account")
    for sid in ids:
        g.add_column(sid, justify="center")
    items = list(data["grid"].items())
    for key, cells in items[:limit]:
        g.add_row(Text(key), *[_glyph(cells.get(sid)) for sid in ids])
    more = data.get("grid_items", len(items)) - min(limit, len(items))
    legend = "✓ ok  ✗ failed  ↷ skipped  · filtered  ⏸ awaiting approval  (blank: not run)"
    g.caption = legend + (f"  · {more} more {plural(more, 'account')} not shown (--rows N shows more)"
                          if more > 0 else "")
    return g


def _glyph(status: str | None) -> Text:
    if status is None:
        return Text("")
    return Text(GLYPH.get(status, status[:1]), style=STATUS_STYLE.get(status, ""))


def run_outputs_view(outputs: list[dict[str, Any]], *, mock: bool = False) -> list[Any]:
    """Run-level outputs (reduce stages): one panel each."""
    parts: list[Any] = []
    for o in outputs:
        body = (json.dumps(o["output"], ensure_ascii=False, indent=2) if o["status"] == "ok"
                else ": ".join(x for x in (o["error_type"], o["error"]) if x) or o["status"])
        title = (f"{o['stage_id']} (run-level output over {o['items']} accounts) · {o['status']} · "
                 f"{o['attempts']} calls · {money(o['cost_usd'], 0, mock=mock)}")
        parts.append(Panel(Text(body[:4000]), title=Text(title), title_align="left",
                           border_style="red" if o["status"] != "ok" else "green"))
    return parts


def span_tree(spans: list[dict[str, Any]], kinds: dict[str, str], *, mock: bool = False) -> Tree:
    """Agent turns of multi-agent stages as a tree (a lead and its sub-agents, a panel's
    rounds), each with its cost and, for a parent, what its subtree cost in all."""
    from agentctl.stages import stage_type

    by_parent: dict[str | None, list[dict]] = {}
    ids = {sp["span_id"] for sp in spans}
    for sp in spans:
        parent = sp["parent_span_id"] if sp["parent_span_id"] in ids else None
        by_parent.setdefault(parent, []).append(sp)

    def subtree_cost(sp: dict) -> float:
        return (sp["cost_usd"] or 0.0) + sum(subtree_cost(c) for c in by_parent.get(sp["span_id"], []))

    def label(sp: dict) -> Text:
        kind = kinds.get(sp["stage_id"], "agent")
        try:
            name = stage_type(kind).span_label(sp)
        except KeyError:
            name = f"{sp['role']} {sp['agent']}"
        used = tokens((sp["input_tokens"] or 0) + (sp["output_tokens"] or 0))
        own = f"{sp['attempts']} calls, {used} tokens, {money(sp['cost_usd'], 0, mock=mock)}"
        children = by_parent.get(sp["span_id"], [])
        total = f", subtree {money(subtree_cost(sp), 0, mock=mock)}" if children and not mock else ""
        text = Text.assemble((f"{sp['stage_id']} ", "bold"), (name[:140], ""),
                             (f"  [{sp['status']}]", STATUS_STYLE.get(sp["status"], "")),
                             (f"  {own}{total}", "dim"))
        out = sp["output"]
        if out is not None:
            text.append("\n  → " + _summary(out, 200), style="dim")
        elif sp.get("error"):
            text.append("\n  ✗ " + sp["error"][:200], style="red")
        return text

    rank = {sid: i for i, sid in enumerate(kinds)}  # the pipeline's order

    def order(sp: dict):
        return (rank.get(sp["stage_id"], len(rank)), sp["stage_id"], sp["started_at"] or "",
                sp["round"] or 0)

    tree = Tree(Text("agent turns (spans)", style="bold"))

    def add(node: Tree, parent: str | None) -> None:
        for sp in sorted(by_parent.get(parent, []), key=order):
            add(node.add(label(sp)), sp["span_id"])

    add(tree, None)
    return tree


def detail_view(detail: dict[str, Any], kinds: dict[str, str] | None = None, *,
                mock: bool = False) -> list[Any]:
    parts: list[Any] = []
    c = Table(title="cells", title_justify="left")
    for col in ("account", "stage", "status", "attempts", "tokens", "output / error"):
        c.add_column(col)
    for cell in detail["cells"]:
        body = cell["error"] if cell["status"] != "ok" else (
            json.dumps(cell["output"], ensure_ascii=False) if cell["output"] is not None
            else "(included in the run-level output; see `agentctl inspect RUN`)")
        c.add_row(Text(cell["item_key"]), Text(cell["stage_id"]),
                  Text(cell["status"], style=STATUS_STYLE.get(cell["status"], "")),
                  str(cell["attempts"]),
                  f"{tokens(cell['input_tokens'])}/{tokens(cell['output_tokens'])}", Text((body or "")[:300]))
    shown, total = len(detail["cells"]), detail.get("totals", {}).get("cells", 0)
    if total > shown:
        c.caption = (f"showing {shown} of {total} cells, the ones not ok first; "
                     "`agentctl export` has them all")
    parts.append(c)
    if detail.get("spans") and (detail["item"] is not None or len(detail["spans"]) <= 200):
        parts.append(span_tree(detail["spans"], kinds or {}, mock=mock))
    if detail["item"] is None:
        return parts  # a whole stage: calls would flood the screen; use --item for them
    tools_by_call: dict[str, list[dict]] = {}
    for tc in detail["tool_calls"]:
        tools_by_call.setdefault(tc["llm_call_id"], []).append(tc)
    for call in detail["llm_calls"]:
        title = (f"{call['stage_id']} · {call['agent']} · attempt {call['attempt']} ({call['purpose']}) · "
                 f"{call['model']} · {call['status']} · {_ms(call['latency_ms'])} · "
                 f"{call['input_tokens'] or 0}/{call['output_tokens'] or 0} tokens")
        lines = Text()
        for m in (call["request"] or {}).get("messages", []):
            content = m.get("content")
            if content is None and m.get("tool_calls"):
                content = json.dumps(m["tool_calls"], ensure_ascii=False)
            lines.append(f"{m.get('role', '?')}: ", style="bold")
            lines.append(str(content)[:1500] + "\n")
        resp = call["response"] or {}
        finish = resp.get("finish_reason")
        if finish not in (None, "stop", "tool_calls"):  # cut off, filtered: why the reply ended
            title += f" · finish_reason {finish}"
        if resp.get("refusal"):
            lines.append("refusal: ", style="bold red")
            lines.append(str(resp["refusal"])[:1500] + "\n")
        lines.append("response: ", style="bold green")
        if resp.get("tool_calls"):
            lines.append(json.dumps(resp["tool_calls"], ensure_ascii=False)[:1500] + "\n")
        if resp.get("content") is not None:
            lines.append(str(resp["content"])[:1500])
        elif not resp.get("tool_calls"):
            lines.append("(no content)" if call["response"] else "(no reply)", style="dim")
        if call.get("error"):  # what agentctl made of it, never shown as if the model said it
            lines.append("\nerror: ", style="bold red")
            lines.append(str(call["error"])[:1500])
        for tc in tools_by_call.get(call["call_id"], []):
            status = tc["status"]
            if tc.get("action_status") and tc["action_status"] != status:  # decided since
                status += f" → {tc['action_status']}" + (
                    f" by {tc['action_decided_by']}" if tc.get("action_decided_by") else "")
            lines.append(f"\ntool {tc['tool']} [{status}]: ", style="bold cyan")
            lines.append(json.dumps(tc["arguments"], ensure_ascii=False)[:300] + " -> " +
                         str(tc["result"] or tc["error"] or "")[:400])
        parts.append(Panel(lines, title=Text(title), title_align="left",
                           border_style="red" if call["status"] != "ok" else "blue"))
    return parts


def review_table(doc: dict[str, Any]) -> Table:
    t = Table(title=f"actions in {doc['run_id']}", title_justify="left")
    for col in ("account", "stage", "tool", "status", "arguments", "upstream"):
        t.add_column(col)
    t.add_column("action id", no_wrap=True, min_width=36)  # whole: `approve --action` takes it
    for a in doc["actions"]:
        t.add_row(Text(a["item_key"] or ""), a["stage_id"], Text(a["tool"]),
                  Text(a["status"], style=STATUS_STYLE.get(a["status"], "")),
                  Text(_summary(a["arguments"], 160)), Text(_summary(a["upstream"], 160)),
                  Text(a["action_id"], style="dim"))
    t.caption = ("no pending actions" if not doc["actions"] else
                 f"{len(doc['actions'])} action(s) · approve: agentctl approve {doc['run_id']} "
                 "--all | --items K1,K2 | --where \"<stage>.<field> >= 80\" | --action ID")
    return t


def _summary(value: Any, limit: int) -> str:
    if isinstance(value, dict):
        text = ", ".join(f"{k}={_summary(v, 60)}" for k, v in value.items())
    else:
        text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else value
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plan_table(doc: dict[str, Any]) -> Group:
    mock = doc["mock"]
    t = Table(title=f"projection for {doc['total_items']} accounts (from {doc['sample_items']} sampled"
                    f"{', mock model' if mock else ''})", title_justify="left")
    for col in ("stage", "accounts", "calls", "tokens in", "tokens out", "cost", "models"):
        t.add_column(col, justify="left" if col in ("stage", "models") else "right")
    for s in doc["stages"]:
        if "llm_calls" not in s:  # a stage type that calls no model (select)
            t.add_row(Text(f"{s['id']} [{s['kind']}]"), f"{s['items']:.0f}", "", "", "", "", "")
            continue
        t.add_row(s["id"], f"{s['items']:.0f}", str(s["llm_calls"]), tokens(s["input_tokens"]),
                  tokens(s["output_tokens"]), money(s["cost_usd"], s["unpriced_calls"], mock=mock),
                  ", ".join(s["models"]))
    tot = doc["totals"]
    t.caption = (f"total {tot['llm_calls']} calls · {tokens(tot['input_tokens'])} in / "
                 f"{tokens(tot['output_tokens'])} out · "
                 f"{money(tot['cost_usd'], tot['unpriced_calls'], mock=mock)} · "
                 f"~{duration(tot['estimated_wall_s'])} at concurrency {doc['concurrency']}")
    return Group(t, Text(doc["note"], style="dim"),
                 Text(f"sample run: agentctl inspect {doc['sample_run_id']}", style="dim"))
