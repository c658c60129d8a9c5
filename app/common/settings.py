"""Typed settings, read once from the environment (and `.env`) at start-up.

Every knob of the service lives here so that a wrong value stops start-up with one line
naming the variable, instead of failing later in the middle of a request or a nightly run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from apscheduler.triggers.cron import CronTrigger

T = TypeVar("T")


class SettingsError(ValueError):
    """A variable of the environment has a value the service cannot use."""


def _int(name: str, low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
        if low is not None and value < low:
            raise SettingsError(f"{name} must be >= {low}, got {value}")
        if high is not None and value > high:
            raise SettingsError(f"{name} must be <= {high}, got {value}")
        return value

    return parse


def _float(name: str, low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise SettingsError(f"{name} must be a number, got {raw!r}") from None
        if not low <= value <= high:
            raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
        return value

    return parse


def _bool(name: str) -> Callable[[str], bool]:
    def parse(raw: str) -> bool:
        text = raw.strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off"}:
            return False
        raise SettingsError(f"{name} must be true or false, got {raw!r}")

    return parse


def _choice(name: str, *allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        text = raw.strip().lower()
        if text not in allowed:
            raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
        return text

    return parse


def _url(name: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        text = raw.strip().rstrip("/")
        if not text.startswith(("http://", "https://", "file:")):
            raise SettingsError(f"{name} must be an http(s):// or file: URL, got {raw!r}")
        return text

    return parse


def _cron(name: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        try:
            CronTrigger.from_crontab(raw.strip(), timezone="UTC")
        except ValueError as exc:
            raise SettingsError(f"{name} is not a valid crontab expression: {exc}") from None
        return raw.strip()

    return parse


def _tokens(raw: str) -> tuple[str, ...]:
    return tuple(token.strip() for token in raw.split(",") if token.strip())


# Layouts that are not cards one would scan: not indexed unless REFRESH_EXCLUDED_LAYOUTS says.
DEFAULT_EXCLUDED_LAYOUTS: tuple[str, ...] = (
    "art_series", "double_faced_token", "emblem", "planar", "scheme", "token", "vanguard",
)
_LANG = re.compile(r"^[a-z]{2,3}$")
_LAYOUT = re.compile(r"^[a-z][a-z_]*$")


def _langs(name: str) -> Callable[[str], tuple[str, ...]]:
    """Scryfall language codes (en, ja, zhs, ...), or `any` for every language (empty)."""

    def parse(raw: str) -> tuple[str, ...]:
        items = list(dict.fromkeys(t.lower() for t in _tokens(raw)))
        if items == ["any"]:
            return ()
        bad = [t for t in items if not _LANG.match(t) or t == "any"]
        if bad or not items:
            raise SettingsError(
                f"{name} must be a comma-separated list of Scryfall language codes (en, ja, "
                f"zhs, ...) or 'any', got {raw!r}"
            )
        return tuple(items)

    return parse


def _layouts(name: str) -> Callable[[str], tuple[str, ...]]:
    """Scryfall layout names (token, art_series, ...), or `none` to exclude nothing."""

    def parse(raw: str) -> tuple[str, ...]:
        items = sorted({t.lower() for t in _tokens(raw)})
        if items == ["none"]:
            return ()
        bad = [t for t in items if not _LAYOUT.match(t) or t == "none"]
        if bad or not items:
            raise SettingsError(
                f"{name} must be a comma-separated list of Scryfall layouts (token, "
                f"art_series, ...) or 'none', got {raw!r}"
            )
        return tuple(items)

    return parse


_SET_CODE = re.compile(r"^[a-z0-9]{2,8}$")


def parse_set_codes(name: str, raw: str) -> tuple[str, ...]:
    """Scryfall set codes (rtr, dsk, pfrf, 30a, ...), sorted; empty means every set."""
    items = sorted({t.lower() for t in _tokens(raw)})
    bad = [t for t in items if not _SET_CODE.match(t)]
    if bad:
        raise SettingsError(
            f"{name} must be a comma-separated list of Scryfall set codes (rtr, dsk, ...) "
            f"or empty for every set, got {raw!r}"
        )
    return tuple(items)


def mask_url(url: str) -> str:
    """The URL as it may be shown (errors, /readyz, /status, logs): no user, password, query
    or fragment, which carry the tokens of signed download URLs."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if parts.username or parts.password:
        host = f"***@{host}"
    shown = urlunsplit((parts.scheme, host, parts.path, "", ""))
    return shown + ("?***" if parts.query or parts.fragment else "")


def _text(raw: str) -> str:
    return raw.strip()


def _log_level(name: str) -> Callable[[str], str]:
    return lambda raw: _choice(name, "debug", "info", "warning", "error", "critical")(raw).upper()


@dataclass(frozen=True)
class Settings:
    """The service's configuration. Field names are the environment variables, lower-cased."""

    flask_env: str = "development"
    port: int = 5001
    log_level: str = "INFO"
    log_file_path: str = ""
    log_format: str = "text"  # text | json (one JSON object per line)
    frontend_url: str = ""
    proxy_count: int = 1

    resources_dir: Path = Path("resources")
    scryfall_data_dir: Path = Path("data")
    scryfall_api_url: str = "https://api.scryfall.com"
    scryfall_bulk_type: str = "default_cards"
    resource_bundle_url: str = ""
    refresh_cron: str = "0 2 * * *"
    refresh_enabled: bool = True
    refresh_langs: tuple[str, ...] = ("en",)  # empty: every language
    refresh_sets: tuple[str, ...] = ()  # empty: every set
    refresh_excluded_layouts: tuple[str, ...] = DEFAULT_EXCLUDED_LAYOUTS
    refresh_min_hit_rate: float = 0.85
    # Only whether a *missing* bundle is obtained at start (release archive or one refresh):
    # an existing bundle is always loaded and promotions always watched.
    bootstrap_missing_bundle: bool = True
    # A first-start bootstrap that failed (database not up yet, Scryfall or the release host
    # down) is tried again after 5 s, doubling up to this many seconds; 0: never again.
    bootstrap_retry_max_delay: float = 300.0
    watch_polling: bool = False

    postgres_user: str = "postgres"
    postgres_password: str = ""
    postgres_db: str = "mtg"
    postgres_host: str = ""
    postgres_port: int = 5432
    redis_host: str = ""
    redis_port: int = 6379
    redis_db: int = 0
    redis_password: str = ""

    infer_api_tokens: tuple[str, ...] = ()
    infer_auth: str = "enabled"
    max_content_length: int = 10 * 1024 * 1024
    max_image_pixels: int = 50_000_000
    max_concurrent_infer: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    infer_queue_timeout: float = 2.0
    infer_time_budget_ms: int = 1500
    infer_multi_time_budget_ms: int = 5000
    recognition_profile: str = "default"
    # OpenCV's and FAISS's threads per recognition: a lone request uses both cores of the
    # 2-core deployment (SIFT's DoG, extrema and descriptors run in parallel). Side by side
    # at 2,213 printings: HTTP p50/p95 198/386 -> 158/327 ms, but 125 -> 138 ms per photo
    # with 2 in flight (docs/design-notes.md, "Threads per recognition"). Two by default:
    # more was not measured.
    recognition_threads: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    read_collector_line: bool = True
    second_line_reader: bool = True

    # Not a variable: what reading the environment found deprecated, for create_app to log
    # once logging is set up (reading happens before it, and must stay free of side effects).
    deprecations: tuple[str, ...] = field(default=(), compare=False, metadata={"env": False})

    @property
    def uses_postgres(self) -> bool:
        return bool(self.postgres_host)

    @property
    def uses_redis(self) -> bool:
        return bool(self.redis_host)

    @property
    def is_production(self) -> bool:
        return self.flask_env == "production"

    @property
    def run_dir(self) -> Path:
        """The bundle being served: a symlink to one of `releases/`."""
        return self.resources_dir / "run"

    def public_dict(self) -> dict[str, Any]:
        """Settings safe to log or show: passwords masked, tokens counted, URLs without
        credentials or query (a signed RESOURCE_BUNDLE_URL carries its token there)."""
        data = asdict(self)
        del data["deprecations"]
        for secret in ("postgres_password", "redis_password"):
            if data[secret]:
                data[secret] = "***"
        for url in ("scryfall_api_url", "resource_bundle_url", "frontend_url"):
            data[url] = mask_url(data[url])
        data["infer_api_tokens"] = f"{len(self.infer_api_tokens)} token(s)"
        return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every variable; raise SettingsError naming the first bad one."""
        env = os.environ if environ is None else environ
        parsers: dict[str, Callable[[str], Any]] = {
            "flask_env": _choice("FLASK_ENV", "development", "production", "testing"),
            "port": _int("PORT", 1, 65535),
            "log_level": _log_level("LOG_LEVEL"),
            "log_file_path": _text,
            "log_format": _choice("LOG_FORMAT", "text", "json"),
            "frontend_url": _text,
            "proxy_count": _int("PROXY_COUNT", 0, 10),
            "resources_dir": lambda raw: Path(raw.strip()),
            "scryfall_data_dir": lambda raw: Path(raw.strip()),
            "scryfall_api_url": _url("SCRYFALL_API_URL"),
            "scryfall_bulk_type": _text,
            "resource_bundle_url": lambda raw: _url("RESOURCE_BUNDLE_URL")(raw) if raw else "",
            "refresh_cron": _cron("REFRESH_CRON"),
            "refresh_enabled": _bool("REFRESH_ENABLED"),
            "refresh_langs": _langs("REFRESH_LANGS"),
            "refresh_sets": lambda raw: parse_set_codes("REFRESH_SETS", raw),
            "refresh_excluded_layouts": _layouts("REFRESH_EXCLUDED_LAYOUTS"),
            "refresh_min_hit_rate": _float("REFRESH_MIN_HIT_RATE", 0.0, 1.0),
            "bootstrap_missing_bundle": _bool("BOOTSTRAP_MISSING_BUNDLE"),
            "bootstrap_retry_max_delay": _float("BOOTSTRAP_RETRY_MAX_DELAY", 0.0, 86400.0),
            "watch_polling": _bool("WATCH_POLLING"),
            "postgres_user": _text,
            "postgres_password": lambda raw: raw,
            "postgres_db": _text,
            "postgres_host": _text,
            "postgres_port": _int("POSTGRES_PORT", 1, 65535),
            "redis_host": _text,
            "redis_port": _int("REDIS_PORT", 1, 65535),
            "redis_db": _int("REDIS_DB", 0, 1024),
            "redis_password": lambda raw: raw,
            "infer_api_tokens": _tokens,
            "infer_auth": _choice("INFER_AUTH", "enabled", "disabled"),
            "max_content_length": _int("MAX_CONTENT_LENGTH", 1024),
            "max_image_pixels": _int("MAX_IMAGE_PIXELS", 10_000, 1 << 30),
            "max_concurrent_infer": _int("MAX_CONCURRENT_INFER", 1, 256),
            "infer_queue_timeout": _float("INFER_QUEUE_TIMEOUT", 0.0, 60.0),
            "infer_time_budget_ms": _int("INFER_TIME_BUDGET_MS", 100, 600_000),
            "infer_multi_time_budget_ms": _int("INFER_MULTI_TIME_BUDGET_MS", 100, 600_000),
            "recognition_profile": _text,
            "recognition_threads": _int("RECOGNITION_THREADS", 1, 64),
            "read_collector_line": _bool("READ_COLLECTOR_LINE"),
            "second_line_reader": _bool("SECOND_LINE_READER"),
        }
        values: dict[str, Any] = {}
        for item in _env_fields():
            raw = env.get(item.name.upper())
            if raw is None or (raw.strip() == "" and item.name not in ("postgres_password",)):
                continue
            values[item.name] = parsers[item.name](raw)
        deprecations = []
        for old, (new, parse, meaning) in RENAMED_VARIABLES.items():
            raw = env.get(old)
            if raw is None or not raw.strip():
                continue
            value = parse(raw)
            if new.lower() in values and values[new.lower()] != value:
                raise SettingsError(f"{old} is the old name of {new} and they disagree; "
                                    f"set only {new}")
            values[new.lower()] = value
            deprecations.append(f"{old} is deprecated, rename it {new} (read as "
                                f"{new}={raw.strip()}: {meaning})")
        return cls(**values, deprecations=tuple(deprecations))


def _env_fields() -> list[Field[Any]]:
    return [item for item in fields(Settings) if item.metadata.get("env", True)]


# Old name -> (new name, parser, what it means now). The old name is still read, and
# create_app logs a deprecation line. PREPARE_ON_START was renamed when it stopped turning
# off the loading of an existing bundle: the new name says all it does.
RENAMED_VARIABLES: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "PREPARE_ON_START": (
        "BOOTSTRAP_MISSING_BUNDLE",
        _bool("PREPARE_ON_START"),
        "only whether a missing bundle is downloaded or built at start; an existing one is "
        "always loaded and promotions always watched",
    ),
}

ENV_VARIABLES: tuple[str, ...] = tuple(item.name.upper() for item in _env_fields())
"""Every variable the service reads by its current name; `.env.example` and docker-compose are
checked against it."""
