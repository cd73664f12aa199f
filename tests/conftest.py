"""Every test runs in a temp dir, with its own run log, no provider keys, and no way out to the
internet: proxies point at a closed loopback port and only loopback is exempt, so a request
that would leave the machine fails fast instead of spending money.
"""

from __future__ import annotations

import os

import pytest

from tests.fakes.llm_server import FakeLLM

# Set before anything imports litellm (some test modules do at collection): never fetch the
# price map from the network.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

PROVIDER_KEYS = (
    "OPENAI_API_KEY", "OPENAI_API_BASE", "OPENAI_BASE_URL", "OPENAI_ORGANIZATION",
    "OPENAI_PROJECT", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "GEMINI_API_KEY",
    "GOOGLE_API_KEY", "GROQ_API_KEY", "MISTRAL_API_KEY", "COHERE_API_KEY", "CO_API_KEY",
    "TOGETHER_API_KEY", "TOGETHERAI_API_KEY", "DEEPSEEK_API_KEY", "XAI_API_KEY",
    "OPENROUTER_API_KEY", "FIREWORKS_API_KEY", "PERPLEXITYAI_API_KEY", "HUGGINGFACE_API_KEY",
    "REPLICATE_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "GOOGLE_APPLICATION_CREDENTIALS", "VERTEXAI_PROJECT", "LITELLM_API_KEY", "LITELLM_MASTER_KEY",
    "OLLAMA_API_BASE", "AGENTCTL_DEBUG", "AGENTCTL_DB_LOCK_WAIT",
)
PROVIDER_PREFIXES = ("AZURE_", "AZURE_OPENAI_")
CLOSED_PROXY = "http://127.0.0.1:9"  # discard port: nothing listens, connections fail at once
LOOPBACK = "127.0.0.1,localhost,::1"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Temp cwd and run log, no keys, no internet."""
    monkeypatch.setenv("AGENTCTL_DB", str(tmp_path / "agentctl.duckdb"))
    for key in list(os.environ):
        if key in PROVIDER_KEYS or key.startswith(PROVIDER_PREFIXES):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setenv("LITELLM_TELEMETRY", "False")
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(key, CLOSED_PROXY)
        monkeypatch.setenv(key.lower(), CLOSED_PROXY)
    monkeypatch.setenv("NO_PROXY", LOOPBACK)
    monkeypatch.setenv("no_proxy", LOOPBACK)
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.fixture
def llm():
    """A started fake OpenAI-compatible server on loopback (stopped after the test)."""
    server = FakeLLM().start()
    try:
        yield server
    finally:
        server.stop()
