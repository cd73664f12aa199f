"""The settings every tool type accepts, from the settings models themselves (for generated docs).

    python -c "from agentctl.tools.reference import settings_markdown; print(settings_markdown())"
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

SETTINGS_MODELS = {
    "kb_search": "agentctl.tools.kb_search:KbSearchSettings",
    "sql": "agentctl.tools.sql:SqlSettings",
    "http_get": "agentctl.tools.http_get:HttpGetSettings",
    "crm_upsert": "agentctl.tools.crm_upsert:CrmUpsertSettings",
    "send_email": "agentctl.tools.send_email:SendEmailSettings",
    "python": "agentctl.tools.python_function:PythonSettings",
    "mcp": "agentctl.tools.mcp_client:McpSettings",
}
COMMON = [
    {"setting": "type", "type": "str", "default": "(required)", "description": "the tool type"},
    {"setting": "description", "type": "str", "default": "", "description": "replaces the tool's own description"},
    {"setting": "side_effects", "type": "bool", "default": "",
     "description": "python/mcp: mark calls as side effects (approval, ledger); cannot be false for "
                    "crm_upsert/send_email"},
]


def settings_model(type_: str) -> type[BaseModel]:
    module, _, attr = SETTINGS_MODELS[type_].partition(":")
    return getattr(importlib.import_module(module), attr)


def settings_rows(type_: str) -> list[dict[str, str]]:
    return _rows(settings_model(type_), prefix="")


def _rows(model: type[BaseModel], prefix: str) -> list[dict[str, str]]:
    rows = []
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        if field.is_required():
            default = "(required)"
        elif field.default_factory is not None:
            default = repr(field.default_factory())  # type: ignore[call-arg]
        else:
            default = "" if field.default in (None, PydanticUndefined) else repr(field.default)
        nested = _nested_model(field.annotation)
        rows.append({"setting": key, "type": "mapping" if nested else _type_name(field.annotation),
                     "default": default, "description": field.description or ""})
        if nested:
            rows.extend(_rows(nested, prefix=f"{key}."))
    return rows


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def settings_markdown() -> str:
    parts = ["Every tool accepts: " + ", ".join(f"`{r['setting']}`" for r in COMMON) + "."]
    for type_ in SETTINGS_MODELS:
        parts.append(f"\n#### `{type_}`\n\n| setting | type | default | description |\n|---|---|---|---|")
        for row in settings_rows(type_):
            parts.append(f"| `{row['setting']}` | {row['type']} | {row['default']} | {row['description']} |")
    return "\n".join(parts) + "\n"


def _type_name(annotation: Any) -> str:
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")
    return text.replace(" | None", "").replace(" | ", " or ")
