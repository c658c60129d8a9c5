"""The service's name and version: one place (pyproject.toml reads `__version__` from here;
/healthz, /status, the API docs and the Scryfall User-Agent show them)."""

__version__ = "0.1.0"
SERVICE_NAME = "descriptor-infer-service"
