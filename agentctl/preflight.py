"""Checks of the environment a run needs, before any run row or model call: provider keys
and endpoints, prices for a budget, open-file limits. Every failure is a ConfigError (exit 2).
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from agentctl.engine.plan import build_routes
from agentctl.errors import ConfigError
from agentctl.spec.loader import LoadedSpec

if TYPE_CHECKING:
    from agentctl.runner import Prepared


def allow_open_files(concurrency: int) -> None:
    """Each call in flight holds a socket: lift the soft open-files limit (often 1,024) toward
    the hard one, so `--concurrency 1000` is not cut short by EMFILE."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 4 * concurrency + 256
        if soft != resource.RLIM_INFINITY and soft < want:
            target = want if hard == resource.RLIM_INFINITY else min(hard, want)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, ValueError, OSError):
        pass


def used_aliases(spec: LoadedSpec) -> set[str]:
    p = spec.pipeline
    aliases = set()
    for s in p.stages:
        aliases.update(spec.model_aliases(s.id))
    for a in list(aliases):
        aliases.update(p.models[a].fallbacks)
    return aliases


def check_provider_env(spec: LoadedSpec) -> None:
    """Fail fast (exit 2) on a missing API key or an api_base nobody listens on."""
    from agentctl.llm.litellm_client import load_litellm

    litellm = load_litellm()
    routes = build_routes(spec.pipeline)
    for alias in sorted(used_aliases(spec)):
        route = routes[alias]
        api_base = route.params.get("api_base") or _env_api_base(route.model)
        try:
            _, provider, _, default_base = litellm.get_llm_provider(
                model=route.model, api_base=api_base,
                custom_llm_provider=route.params.get("custom_llm_provider"))
        except Exception:
            source = " (from --model)" if spec.model_override else ""
            raise ConfigError(
                f"model alias '{alias}': litellm cannot tell which provider serves "
                f"'{route.model}'{source}; write it as <provider>/<model>, e.g. "
                "openai/gpt-4o-mini or ollama/llama3.1") from None
        if not api_base and provider in LOCAL_PROVIDERS and default_base:
            api_base = default_base  # a local server (Ollama): is it running?
        if api_base:
            _check_reachable(api_base, alias)
        try:
            env = litellm.validate_environment(model=route.model, api_base=api_base)
        except Exception:
            continue
        missing = [k for k in env.get("missing_keys", []) if "BASE" not in k.upper()]
        if missing and not env.get("keys_in_environment"):
            hint = ("; for a local OpenAI-compatible server any value works"
                    if api_base else "")
            raise ConfigError(
                f"model alias '{alias}' ({route.model}) needs {', '.join(missing)} in the "
                f"environment; export it{hint} (`agentctl run ... --mock` tries a pipeline "
                "offline, without keys)")


LOCAL_PROVIDERS = ("ollama", "ollama_chat")


def _env_api_base(model: str) -> str | None:
    if model.startswith("openai/"):
        return os.environ.get("OPENAI_API_BASE") or os.environ.get("OPENAI_BASE_URL")
    return None


def _check_reachable(api_base: str, alias: str) -> None:
    url = urlparse(api_base)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(f"model alias '{alias}': api_base '{api_base}' is not an http(s) URL")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=3):
            pass
    except OSError as exc:
        raise ConfigError(f"model alias '{alias}': cannot reach api_base {api_base} "
                          f"({exc.strerror or exc}); start the server or fix api_base") from None


def check_budget_prices(prep: "Prepared") -> None:
    """A budget cannot be kept for a model nobody knows the price of: say so up front."""
    if prep.options.mock or prep.options.replay:
        return
    spec_budget = prep.spec.pipeline.budget
    if prep.options.max_cost is None and not (spec_budget and (spec_budget.max_usd or spec_budget.per_item_usd)):
        return
    from agentctl.llm.litellm_client import known_price

    routes = build_routes(prep.spec.pipeline)
    for alias in sorted(used_aliases(prep.spec)):
        r = routes[alias]
        if r.price is None and not known_price(r.model):
            raise ConfigError(f"model alias '{alias}' ({r.model}) is unpriced in litellm's price "
                              f"map, so a budget cannot be enforced; set models.{alias}.price "
                              "{input_per_mtok, output_per_mtok} in the spec")
