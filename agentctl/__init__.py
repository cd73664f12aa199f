"""agentctl: batch multi-agent LLM pipelines over lists of accounts, with a DuckDB run log."""

__version__ = "0.1.0"
