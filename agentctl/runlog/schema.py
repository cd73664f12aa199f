"""The run log's schema, as numbered migrations. Never edit a released migration: add one.

`docs/runlog-schema.md` is generated from this file (`make docs`); a test checks it matches.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "initial schema", """
CREATE TABLE runs (
    run_id           VARCHAR PRIMARY KEY,  -- e.g. r-20261121-081530-ab12cd
    pipeline         VARCHAR NOT NULL,     -- spec `name`
    spec_path        VARCHAR,              -- absolute path of the YAML at start
    spec_text        VARCHAR,              -- the full spec text as run
    spec_sha256      VARCHAR,
    prompts          JSON,                 -- resolved prompt/system texts (file prompts inlined)
    input_path       VARCHAR,
    input_sha256     VARCHAR,
    input_rows       INTEGER,
    args             JSON,                 -- CLI arguments (no secrets)
    status           VARCHAR NOT NULL,     -- running | completed | completed_with_errors | failed
                                           -- | interrupted | awaiting_approval | budget_exceeded
    mock             BOOLEAN DEFAULT false,-- true when run with --mock
    started_at       TIMESTAMP NOT NULL,
    ended_at         TIMESTAMP,
    heartbeat_at     TIMESTAMP,            -- last flush of a live run (stale + running = crashed)
    pid              INTEGER,
    host             VARCHAR,
    os_user          VARCHAR,
    agentctl_version VARCHAR,
    error            VARCHAR,              -- why a run failed or stopped early
    totals           JSON                  -- {items, cells, ok, failed, skipped, llm_calls, tool_calls,
                                           --  input_tokens, output_tokens, cost_usd, unpriced_calls,
                                           --  rate_limits: [{lane, rate_limited, concurrency,
                                           --  concurrency_cuts, lowest_concurrency, concurrency_at_end,
                                           --  pauses, paused_s}] for each lane that got 429s in the
                                           --  last session}
);
CREATE TABLE items (
    run_id   VARCHAR NOT NULL,
    item_key VARCHAR NOT NULL,             -- the input's key column
    seq      INTEGER NOT NULL,             -- position in the input (0-based)
    input    JSON NOT NULL,                -- the input row
    PRIMARY KEY (run_id, item_key)
);
CREATE TABLE cells (
    run_id        VARCHAR NOT NULL,
    item_key      VARCHAR NOT NULL,
    stage_id      VARCHAR NOT NULL,
    status        VARCHAR NOT NULL,        -- ok | failed | skipped (upstream not ok) | filtered (when/select)
                                           -- | awaiting_approval
    output        JSON,                    -- the validated stage output
    error         VARCHAR,
    error_type    VARCHAR,
    attempts      INTEGER DEFAULT 0,       -- LLM calls made for this cell (incl. retries, repairs, tool rounds),
                                           --   in every session of the run: a cell that ran again after resume
                                           --   or retry counts its earlier calls too (so do its tokens and cost)
    input_tokens  BIGINT DEFAULT 0,
    output_tokens BIGINT DEFAULT 0,
    cost_usd      DOUBLE,                  -- NULL when a call was unpriced
    started_at    TIMESTAMP,
    ended_at      TIMESTAMP,
    duration_ms   DOUBLE,
    PRIMARY KEY (run_id, item_key, stage_id)
);
CREATE TABLE llm_calls (
    call_id       VARCHAR PRIMARY KEY,
    run_id        VARCHAR NOT NULL,
    item_key      VARCHAR,
    stage_id      VARCHAR,
    agent         VARCHAR,
    alias         VARCHAR,                 -- model alias in the spec
    model         VARCHAR,                 -- the model name the reply reports (a proxy may name another);
                                           --   without a reply, the litellm model string sent ('mock' for
                                           --   --mock). What was sent, and priced: request->>'model'
    attempt       INTEGER,                 -- 1-based, per cell, across retries/repairs/tool rounds, in
                                           --   one session: a cell run again by resume/retry counts from
                                           --   1 again (order a cell's calls by started_at); a hedge
                                           --   takes the next number after its original's
    purpose       VARCHAR,                 -- initial | retry | repair | tool_round
    request       JSON,                    -- messages, tools, response_format, params (never keys)
    response      JSON,                    -- content, tool_calls, finish_reason, usage (null: not
                                           --   reported), refusal (the model's refusal text)
    status        VARCHAR NOT NULL,        -- ok | invalid (reply failed the schema) | error | cancelled (a hedge that lost, or
                                           --   in flight when its cell was stopped: Ctrl-C, SIGTERM, a failed panel sibling)
    error         VARCHAR,
    error_type    VARCHAR,                 -- invalid: OutputInvalid, or Truncated | ContentFilter | Refused
                                           --   | EmptyReply (a reply no stage can use: the cell fails, no repair)
    input_tokens  BIGINT,                  -- NULL: no reply, or the reply reported no usable usage
    output_tokens BIGINT,
    cost_usd      DOUBLE,                  -- the configured model's price (the alias's `price:` or
                                           --   litellm's price map), never the reply's model name;
                                           --   NULL = unpriced (also when the reply reported no usage)
    latency_ms    DOUBLE,
    wait_ms       DOUBLE,                  -- backoff waited before the next attempt (NULL: none followed)
    cache_hit     BOOLEAN DEFAULT false,
    started_at    TIMESTAMP
);
CREATE TABLE tool_calls (
    tool_call_id    VARCHAR PRIMARY KEY,
    run_id          VARCHAR NOT NULL,
    item_key        VARCHAR,
    stage_id        VARCHAR,
    agent           VARCHAR,
    llm_call_id     VARCHAR,               -- the llm_calls row whose reply asked for this call
    tool            VARCHAR NOT NULL,
    arguments       JSON,
    result          VARCHAR,               -- what the model was given (truncated)
    result_chars    INTEGER,               -- size of the full result before truncation
    status          VARCHAR NOT NULL,      -- ok | error | denied | invalid_args | pending_approval | dry_run
                                           -- | rejected (its action was rejected) | refused/reused (spawn)
    error           VARCHAR,
    duration_ms     DOUBLE,
    idempotency_key VARCHAR,
    started_at      TIMESTAMP
);
CREATE TABLE actions (
    idempotency_key VARCHAR PRIMARY KEY,   -- sha256(run, item, stage, tool, canonical arguments)
    run_id          VARCHAR NOT NULL,
    item_key        VARCHAR,
    stage_id        VARCHAR,
    tool            VARCHAR NOT NULL,
    arguments       JSON,
    status          VARCHAR NOT NULL,      -- pending_approval | approved | rejected | intent | done | failed | dry_run
                                           -- | withdrawn (by agentctl after a retry: its cell's account was filtered
                                           --   out, or the cell ran again and did not ask for it; never executed)
    result          JSON,
    error           VARCHAR,
    decided_by      VARCHAR,
    decided_at      TIMESTAMP,
    decision_note   VARCHAR,
    created_at      TIMESTAMP,
    done_at         TIMESTAMP
);
"""),
    (2, "request hash for the response cache and replay", """
ALTER TABLE llm_calls ADD COLUMN request_hash VARCHAR;  -- sha256 of model, messages, params, schema, tools
"""),
    (3, "multi-agent stages: spans (agent turns), run-level outputs", """
CREATE TABLE spans (
    span_id        VARCHAR PRIMARY KEY,    -- deterministic: run + stage + item + place in the stage
    run_id         VARCHAR NOT NULL,
    item_key       VARCHAR,                -- NULL for a fan-in stage's run-level work (reduce)
    stage_id       VARCHAR NOT NULL,
    parent_span_id VARCHAR,                -- the agent that spawned this one (orchestrate, reduce tree)
    agent          VARCHAR,
    role           VARCHAR,                -- router | specialist | panelist | moderator | lead
                                           -- | subagent | reduce | map | merge
    depth          INTEGER,                -- 0 for the lead, 1 for its sub-agents, ...
    round          INTEGER,                -- a panelist's discussion round
    task           VARCHAR,                -- what it was asked (a sub-agent's task, a route's reason)
    status         VARCHAR NOT NULL,       -- ok | failed | awaiting_approval | refused (a sub-agent the
                                           --   item's budget stopped part-way; one refused before its
                                           --   first call has no span, like other refused spawns)
    output         JSON,
    error          VARCHAR,
    error_type     VARCHAR,
    attempts       INTEGER,                -- LLM calls of this turn (retries, repairs, tool rounds)
    input_tokens   BIGINT,
    output_tokens  BIGINT,
    cost_usd       DOUBLE,                 -- this turn only (not its sub-agents), every session's calls
                                           --   (a turn replayed from the cache keeps what it first cost); NULL = unpriced
    started_at     TIMESTAMP,
    ended_at       TIMESTAMP,
    duration_ms    DOUBLE
);
CREATE TABLE run_outputs (
    run_id        VARCHAR NOT NULL,
    stage_id      VARCHAR NOT NULL,        -- a reduce stage: one output for the whole run
    status        VARCHAR NOT NULL,        -- ok | failed | awaiting_approval | skipped (no account reached it)
    output        JSON,
    error         VARCHAR,
    error_type    VARCHAR,
    items         INTEGER,                 -- accounts that went into it
    attempts      INTEGER,
    input_tokens  BIGINT,
    output_tokens BIGINT,
    cost_usd      DOUBLE,                  -- attempts, tokens and cost: every call of the stage's run-level
                                           --   work in every session (maps paid before a crash, a reduce a retry replaced)
    started_at    TIMESTAMP,
    ended_at      TIMESTAMP,
    duration_ms   DOUBLE,
    PRIMARY KEY (run_id, stage_id)
);
-- llm_calls rows may now also have purpose 'hedge' (a duplicate sent past hedge_after_p; no
-- tokens, no cost) with status 'ok' (it answered first) or 'cancelled' (it lost)
ALTER TABLE llm_calls ADD COLUMN span_id VARCHAR;  -- the agent turn (spans) this call belongs to
ALTER TABLE tool_calls ADD COLUMN span_id VARCHAR;  -- the agent turn that made the call
ALTER TABLE tool_calls ADD COLUMN child_span_id VARCHAR;  -- spawn: the sub-agent it started (status refused | reused too)
"""),
    (4, "append-only logs: no index that grows with the log's history", """
-- A primary key's index is loaded and rewritten by every writer that appends to its table, so
-- its cost grows with everything the log file has ever held. The big tables become
-- append-only: llm_calls and tool_calls lose their (uuid) keys; cells, items and spans are
-- views over logs where the newest version of a row wins.
CREATE TABLE llm_calls_v4 AS SELECT * FROM llm_calls;
DROP TABLE llm_calls;
ALTER TABLE llm_calls_v4 RENAME TO llm_calls;
CREATE TABLE tool_calls_v4 AS SELECT * FROM tool_calls;
DROP TABLE tool_calls;
ALTER TABLE tool_calls_v4 RENAME TO tool_calls;
CREATE TABLE cell_log AS SELECT *, 0::BIGINT AS version FROM cells;
DROP TABLE cells;
CREATE VIEW cells AS SELECT * EXCLUDE (version) FROM cell_log
    QUALIFY row_number() OVER (PARTITION BY run_id, item_key, stage_id ORDER BY version DESC) = 1;
CREATE TABLE item_log AS SELECT *, 0::BIGINT AS version FROM items;
DROP TABLE items;
CREATE VIEW items AS SELECT * EXCLUDE (version) FROM item_log
    QUALIFY row_number() OVER (PARTITION BY run_id, item_key ORDER BY version DESC) = 1;
CREATE TABLE span_log AS SELECT *, 0::BIGINT AS version FROM spans;
DROP TABLE spans;
CREATE VIEW spans AS SELECT * EXCLUDE (version) FROM span_log
    QUALIFY row_number() OVER (PARTITION BY span_id ORDER BY version DESC) = 1;
"""),
]
