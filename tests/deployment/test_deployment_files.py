"""The deployment files agree with each other and with the service's settings.

Docker is not needed: the Dockerfile, docker-compose.yml, .env.example and .dockerignore are
parsed as text and checked against `app.common.settings` (variable names, defaults, ports, paths).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import inspect
import json
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.common.settings import ENV_VARIABLES, Settings
from tests.support.environment import REPOSITORY

DOCKERFILE = REPOSITORY / "Dockerfile"
COMPOSE_FILE = REPOSITORY / "docker-compose.yml"
ENV_EXAMPLE = REPOSITORY / ".env.example"
DOCKERIGNORE = REPOSITORY / ".dockerignore"

INFER = "descriptor-infer"  # the service's replicas
ENTRY = "descriptor-infer-service"  # nginx in front of them: what the core API calls
NGINX_CONF = REPOSITORY / "deploy" / "nginx.conf"
DATABASE = "mtg-db"
REDIS = "redis"

# Variables the container reads that are not service settings: OpenCV's decoder limits,
# the OpenMP and OpenBLAS thread pools (FAISS, numpy), HDF5's file locking and where
# Tesseract finds its trained model.
OPENCV_VARIABLES = (
    "OPENCV_IO_MAX_IMAGE_PIXELS",
    "OPENCV_IO_MAX_IMAGE_WIDTH",
    "OPENCV_IO_MAX_IMAGE_HEIGHT",
)
LIBRARY_VARIABLE = re.compile(
    r"^(OPENCV_[A-Z0-9_]+|OMP_[A-Z0-9_]+|OPENBLAS_[A-Z0-9_]+|MALLOC_[A-Z0-9_]+|HDF5_[A-Z0-9_]+"
    r"|TESSDATA_PREFIX|ORT_[A-Z0-9_]+)$"
)

# In compose these are fixed by the deployment (network names, container paths), never
# taken from .env: a .env written for `make run` must not point the container elsewhere.
COMPOSE_FIXED = {
    "PORT": "5001",
    "POSTGRES_HOST": DATABASE,
    "POSTGRES_PORT": "5432",
    "REDIS_HOST": REDIS,
    "REDIS_PORT": "6379",
    "RESOURCES_DIR": "/app/resources",
    "SCRYFALL_DATA_DIR": "/app/data",
    "LOG_FILE_PATH": "",  # stdout only: Docker keeps and rotates it (x-infer-logging)
}
# Compose defaults that deliberately differ from the settings' defaults (local development).
COMPOSE_OWN_DEFAULTS = {"FLASK_ENV": "production"}

INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
)
ASSIGNMENT = re.compile(r"^(?P<commented>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


def is_known_variable(name: str) -> bool:
    return name in ENV_VARIABLES or bool(LIBRARY_VARIABLE.match(name))


# --- Dockerfile ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def dockerfile_instructions() -> list[Instruction]:
    """Instructions in order, with line continuations joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, arguments = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a line continuation"
    return instructions


def dockerfile_all(keyword: str) -> list[str]:
    return [item.arguments for item in dockerfile_instructions() if item.keyword == keyword]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for arguments in dockerfile_all("ENV"):
        tokens = shlex.split(arguments)
        if tokens and "=" not in tokens[0]:  # legacy form: ENV NAME value with spaces
            env[tokens[0]] = " ".join(tokens[1:])
            continue
        for token in tokens:
            name, separator, value = token.partition("=")
            assert separator, f"ENV token {token!r} is not NAME=value"
            env[name] = value
    return env


def gunicorn_command() -> list[str]:
    commands = dockerfile_all("CMD")
    assert len(commands) == 1, f"expected exactly one CMD, found {len(commands)}"
    command = commands[0]
    if command.startswith("["):
        tokens = [str(token) for token in yaml.safe_load(command)]  # exec form is JSON
        if tokens[:2] == ["sh", "-c"] or tokens[:2] == ["/bin/sh", "-c"]:
            tokens = shlex.split(tokens[2])
    else:
        tokens = shlex.split(command)
    if tokens and tokens[0] == "exec":
        tokens = tokens[1:]
    assert tokens and tokens[0] == "gunicorn", f"CMD does not start gunicorn: {command}"
    return tokens


def option(tokens: list[str], *names: str) -> str | None:
    """The value of a gunicorn option given as `--name value` or `--name=value`."""
    for index, token in enumerate(tokens):
        for name in names:
            if token == name and index + 1 < len(tokens):
                return tokens[index + 1]
            if name.startswith("--") and token.startswith(name + "="):
                return token.split("=", 1)[1]
    return None


# --- docker-compose.yml -------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def services() -> dict[str, Any]:
    found = compose().get("services")
    assert isinstance(found, dict), "docker-compose.yml has no services"
    return found


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(name): "" if value is None else str(value) for name, value in env.items()}


def resolve(value: str, environ: Mapping[str, str]) -> str:
    """Compose's interpolation of one value, for the forms used in docker-compose.yml."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        current = environ.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op in (":-", "-"):
            return arg if unset else str(current)
        if op in (":?", "?"):
            assert not unset, f"{name} is required by docker-compose.yml: {arg}"
            return str(current)
        if op in (":+", "+"):
            return "" if unset else arg
        return "" if current is None else current

    return INTERPOLATION.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


def named_volume_mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Container path -> volume name, for the named volumes (not bind mounts) of a service."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            source, target = str(volume.get("source", "")), str(volume["target"])
            if volume.get("type", "volume") != "volume":
                continue
        else:
            source, _, rest = str(volume).partition(":")
            target = rest.split(":")[0]
        if source and not source.startswith((".", "/", "~", "$")):
            mounts[target] = source
    return mounts


# --- .env.example -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExampleEntry:
    name: str
    value: str
    commented: bool
    comment: str


def env_example() -> list[ExampleEntry]:
    entries: list[ExampleEntry] = []
    previous = ""
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = ASSIGNMENT.match(line.strip())
        if match:
            value = match["value"].strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            comment = previous if previous.startswith("#") else ""
            entries.append(ExampleEntry(match["name"], value, bool(match["commented"]), comment))
        previous = line.strip()
    return entries


def settings_difference(left: Settings, right: Settings) -> dict[str, tuple[Any, Any]]:
    a, b = dataclasses.asdict(left), dataclasses.asdict(right)
    return {name: (a[name], b[name]) for name in a if a[name] != b[name]}


# === Tests: docker-compose.yml ==============================================================


def test_compose_has_the_four_services() -> None:
    assert {ENTRY, INFER, DATABASE, REDIS} <= set(services())
    assert str(services()[DATABASE]["image"]).startswith("postgres:16")
    assert str(services()[REDIS]["image"]).startswith("redis:7")


def test_only_the_four_services_start_by_default() -> None:
    extra = {name for name in services() if name not in (ENTRY, INFER, DATABASE, REDIS)}
    for name in extra:
        assert services()[name].get("profiles"), f"{name} would start by default: give it a profile"


def test_infer_service_is_built_here_and_restarts() -> None:
    infer = services()[INFER]
    build = infer.get("build")
    context = build.get("context", ".") if isinstance(build, dict) else build
    assert Path(REPOSITORY, str(context)).resolve() == REPOSITORY
    assert infer.get("restart") == "unless-stopped"


def test_infer_port_matches_the_dockerfile() -> None:
    infer = services()[INFER]
    exposed = {str(port) for port in infer.get("expose") or []}
    dockerfile_ports = {port.split("/")[0] for port in " ".join(dockerfile_all("EXPOSE")).split()}
    env = dockerfile_env()
    assert exposed == {"5001"}
    assert dockerfile_ports == {"5001"}
    assert env.get("PORT") == "5001"
    assert environment_of(infer).get("PORT") == "5001"
    assert Settings().port == 5001, "the settings' default PORT changed: update Docker"


def test_nothing_is_published_on_the_host() -> None:
    # The core API's authenticating proxy is the only client, on the compose network.
    for name, service in services().items():
        assert not service.get("ports"), f"{name} publishes ports on the host"


def test_compose_environment_names_only_known_variables() -> None:
    for name, service in services().items():
        if name in (DATABASE, REDIS):
            continue
        unknown = sorted(v for v in environment_of(service) if not is_known_variable(v))
        assert not unknown, f"{name} sets variables the service does not read: {unknown}"


def test_compose_passes_every_variable_of_env_example() -> None:
    example = {entry.name for entry in env_example()}
    passed = set(environment_of(services()[INFER]))
    missing = sorted(example - passed)
    assert not missing, f"{INFER} does not pass these .env.example variables: {missing}"


def test_compose_interpolation_uses_each_variables_own_name() -> None:
    for name, value in environment_of(services()[INFER]).items():
        referenced = [match["name"] for match in INTERPOLATION.finditer(value)]
        assert referenced in ([], [name]), f"{name} interpolates {referenced}"
        if name in COMPOSE_FIXED:
            assert value == COMPOSE_FIXED[name], f"{name} must be fixed to {COMPOSE_FIXED[name]!r}"
        else:
            assert referenced == [name], f"{name} should be ${{{name}:-default}} so .env can set it"


def test_compose_defaults_are_valid_settings_and_match_the_defaults() -> None:
    # Resolved as if .env were absent, except for the one variable compose requires.
    resolved = {
        name: resolve(value, {"POSTGRES_PASSWORD": "secret"})
        for name, value in environment_of(services()[INFER]).items()
    }
    settings = Settings.from_env(resolved)
    assert settings.uses_postgres and settings.uses_redis
    assert str(settings.resources_dir) == "/app/resources"
    assert str(settings.scryfall_data_dir) == "/app/data"
    expected = Settings.from_env(
        {
            name: resolved[name]
            for name in (*COMPOSE_FIXED, *COMPOSE_OWN_DEFAULTS, "POSTGRES_PASSWORD")
        }
    )
    difference = settings_difference(settings, expected)
    assert not difference, f"compose defaults differ from the settings' defaults: {difference}"
    for name, value in COMPOSE_OWN_DEFAULTS.items():
        assert resolved[name] == value


def test_compose_requires_a_database_password() -> None:
    # An empty password would leave PostgreSQL unusable; compose stops with a clear message.
    for service in (services()[INFER], services()[DATABASE]):
        value = environment_of(service)["POSTGRES_PASSWORD"]
        with pytest.raises(AssertionError, match="POSTGRES_PASSWORD"):
            resolve(value, {})


def test_database_credentials_come_from_the_same_variables() -> None:
    infer, database = environment_of(services()[INFER]), environment_of(services()[DATABASE])
    for name in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert database.get(name) == infer.get(name), f"{name} differs between services"
    redis = environment_of(services()[REDIS])
    assert redis.get("REDIS_PASSWORD") == infer.get("REDIS_PASSWORD")


def test_depends_on_waits_for_healthy_database_and_redis() -> None:
    for name, service in services().items():
        depends_on = service.get("depends_on")
        if not depends_on:
            continue
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        for dependency, condition in depends_on.items():
            if dependency == INFER:  # the entry point: see the next test
                continue
            assert condition.get("condition") == "service_healthy", f"{name} -> {dependency}"
            assert services()[dependency].get("healthcheck"), f"{dependency} has no healthcheck"
    assert set(services()[INFER]["depends_on"]) == {DATABASE, REDIS}


def test_healthchecks() -> None:
    infer_test = services()[INFER]["healthcheck"]["test"]
    assert "/healthz" in " ".join(infer_test) and ":5001/" in " ".join(infer_test)
    assert "pg_isready" in " ".join(services()[DATABASE]["healthcheck"]["test"])
    redis_test = " ".join(services()[REDIS]["healthcheck"]["test"])
    assert "redis-cli" in redis_test and "ping" in redis_test
    # redis-cli exits 0 on NOAUTH too: the check must look for the PONG answer.
    assert "PONG" in redis_test


def test_named_volumes_are_mounted_and_declared() -> None:
    declared = set(compose().get("volumes") or {})
    for name, service in services().items():
        undeclared = set(named_volume_mounts(service).values()) - declared
        assert not undeclared, f"{name} uses undeclared volumes {sorted(undeclared)}"
    env = environment_of(services()[INFER])
    mounts = named_volume_mounts(services()[INFER])
    for path in (env["RESOURCES_DIR"], env["SCRYFALL_DATA_DIR"]):
        assert path in mounts, f"{INFER} has no named volume at {path}"
    assert len({mounts[p] for p in (env["RESOURCES_DIR"], env["SCRYFALL_DATA_DIR"])}) == 2
    assert "/var/lib/postgresql/data" in named_volume_mounts(services()[DATABASE])


def test_entry_point_spreads_requests_over_the_replicas() -> None:
    """`descriptor-infer-service:5001` stays the address the core API calls; nginx there
    forwards to every replica of `descriptor-infer` (re-resolved as replicas come and go)."""
    entry = services()[ENTRY]
    assert str(entry["image"]).startswith("nginx:")
    assert {str(p) for p in entry.get("expose") or []} == {"5001"}
    assert set(entry["depends_on"]) == {INFER}
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in entry["volumes"]
    conf = NGINX_CONF.read_text()
    assert re.search(rf"server\s+{INFER}:5001\s+resolve", conf)
    assert re.search(r"listen\s+5001;", conf)
    assert "resolver 127.0.0.11" in conf  # Docker's DNS: one address per replica
    # bodies up to MAX_CONTENT_LENGTH reach the service (which answers 413 beyond it)
    limit = re.search(r"client_max_body_size\s+(\d+)m;", conf)
    assert limit and int(limit.group(1)) * 1024 * 1024 >= Settings().max_content_length
    # the request id and the core API's forwarding headers pass through unchanged
    assert "X-Request-ID $http_x_request_id" in conf
    assert "X-Forwarded-For $http_x_forwarded_for" in conf
    replicas = str(services()[INFER]["deploy"]["replicas"])
    assert resolve(replicas, {}) == "2" and "INFER_REPLICAS" in replicas


def test_refresh_service_when_present_runs_the_refresh_command() -> None:
    refresh = [
        s for s in services().values() if "refresh" in " ".join(map(str, s.get("command") or []))
    ]
    for service in refresh:
        assert service.get("profiles"), "the refresh container must not start by default"
        assert service.get("restart") in ("no", None)
        assert environment_of(service) == environment_of(services()[INFER])
        assert named_volume_mounts(service) == named_volume_mounts(services()[INFER])


# === Tests: .env.example ====================================================================


def test_env_example_lists_every_setting() -> None:
    listed = {entry.name for entry in env_example() if not entry.commented}
    missing = [name for name in ENV_VARIABLES if name not in listed]
    assert not missing, f".env.example does not list {missing}"


def test_env_example_names_only_known_variables_once() -> None:
    names = [entry.name for entry in env_example()]
    unknown = sorted({name for name in names if not is_known_variable(name)})
    assert not unknown, f".env.example lists variables the service does not read: {unknown}"
    duplicates = sorted({name for name in names if names.count(name) > 1})
    assert not duplicates, f".env.example lists {duplicates} more than once"


def test_env_example_mentions_the_opencv_limits_commented() -> None:
    entries = {entry.name: entry for entry in env_example()}
    for name in OPENCV_VARIABLES:
        assert name in entries, f".env.example does not mention {name}"
        assert entries[name].commented, f"{name} is set in the Dockerfile; keep it commented"
        assert entries[name].value == dockerfile_env()[name]
    commented = {entry.name for entry in env_example() if entry.commented}
    assert commented == set(OPENCV_VARIABLES)


def test_env_example_comments_every_variable_with_its_default() -> None:
    for entry in env_example():
        assert entry.comment, f"{entry.name} has no comment line above it"
        assert "default" in entry.comment.lower(), f"the comment on {entry.name} gives no default"


def test_env_example_is_a_valid_configuration_equal_to_the_defaults() -> None:
    values = {entry.name: entry.value for entry in env_example() if not entry.commented}
    difference = settings_difference(Settings.from_env(values), Settings.from_env({}))
    assert not difference, f".env.example differs from the settings' defaults: {difference}"


# === Tests: Dockerfile ======================================================================


def test_dockerfile_base_image() -> None:
    assert dockerfile_all("FROM") == ["python:3.13-slim-bookworm"]


def test_dockerfile_runs_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    users = [
        (index, item.arguments) for index, item in enumerate(instructions) if item.keyword == "USER"
    ]
    assert users, "the Dockerfile has no USER"
    index, user = users[-1]
    assert user.split(":")[0] not in ("root", "0"), f"USER {user} is root"
    cmd_index = max(i for i, item in enumerate(instructions) if item.keyword == "CMD")
    assert index < cmd_index
    assert any(user.split(":")[0] in run and "useradd" in run for run in dockerfile_all("RUN"))


def test_dockerfile_environment() -> None:
    env = dockerfile_env()
    expected = {
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        "HDF5_USE_FILE_LOCKING": "FALSE",
        "RESOURCES_DIR": "/app/resources",
        "SCRYFALL_DATA_DIR": "/app/data",
        "LOG_FILE_PATH": "",
        "PORT": "5001",
        # onnxruntime (the second line reader) uploads telemetry unless told not to
        "ORT_DISABLE_TELEMETRY": "1",
    }
    for name, value in expected.items():
        assert env.get(name) == value, f"ENV {name}={env.get(name)!r}, expected {value!r}"
    for name in OPENCV_VARIABLES:
        assert int(env[name]) > 0, f"ENV {name} is missing"
    # OpenCV's decoder limit is the backstop for the service's own check.
    assert int(env["OPENCV_IO_MAX_IMAGE_PIXELS"]) == Settings().max_image_pixels
    unknown = sorted(
        name
        for name in env
        if not is_known_variable(name) and not name.startswith(("PYTHON", "PIP_"))
    )
    assert not unknown, f"the Dockerfile sets unknown variables {unknown}"
    Settings.from_env({name: value for name, value in env.items() if name in ENV_VARIABLES})
    assert "GUNICORN_CMD_ARGS" not in env, "GUNICORN_CMD_ARGS would bypass the checks below"


def test_dockerfile_creates_the_volume_directories_for_the_user() -> None:
    runs = " ".join(dockerfile_all("RUN"))
    for path in ("/app/resources", "/app/data", "/app/logs"):
        assert path in runs, f"the Dockerfile does not create {path}"
    assert "chown" in runs


def test_dockerfile_installs_requirements_without_cache() -> None:
    installs = [run for run in dockerfile_all("RUN") if "pip install" in run]
    assert installs and all("--no-cache-dir" in run for run in installs)
    assert any("-r requirements.txt" in run for run in installs)


def test_gunicorn_is_one_process_with_threads_and_no_preload() -> None:
    tokens = gunicorn_command()
    assert option(tokens, "--worker-class", "-k") == "gthread"
    assert option(tokens, "--workers", "-w") == "1"
    assert int(option(tokens, "--threads") or "1") >= 2
    assert option(tokens, "--bind", "-b") == "0.0.0.0:${PORT}"
    assert "--preload" not in tokens and "--preload-app" not in tokens
    assert tokens[-1] == "app:create_serving_app()"  # create_app alone starts no loading


def test_gunicorn_target_is_a_real_factory() -> None:
    module_name, _, call = gunicorn_command()[-1].partition(":")
    factory_name = call.removesuffix("()")
    module = importlib.import_module(module_name)
    factory = getattr(module, factory_name, None)
    assert callable(factory), f"gunicorn's target {module_name}.{factory_name} does not exist"
    inspect.signature(factory).bind()  # gunicorn calls it with no arguments


def test_dockerfile_healthcheck_uses_healthz_without_curl() -> None:
    checks = dockerfile_all("HEALTHCHECK")
    assert len(checks) == 1
    assert "/healthz" in checks[0] and "urllib" in checks[0]
    assert "curl" not in checks[0] and "wget" not in checks[0]  # not in the slim image


def has_files(path: Path) -> bool:
    if path.is_file():
        return True
    return path.is_dir() and any(
        item.is_file() and "__pycache__" not in item.parts for item in path.rglob("*")
    )


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    sources: list[str] = []
    for arguments in dockerfile_all("COPY"):
        tokens = [token for token in shlex.split(arguments) if not token.startswith("--")]
        sources.extend(tokens[:-1])
    assert {"requirements.txt", "app/", "gunicorn.conf.py"} <= set(sources)
    patterns = [
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for source in sources:
        top = source.strip("/").split("/")[0]
        ignored = [p for p in patterns if not p.startswith("!") and fnmatch.fnmatch(top, p)]
        assert not ignored, f"COPY {source} is excluded by .dockerignore {ignored}"
    # A directory git does not track (empty) is absent from a clean clone: COPY would fail.
    missing = [source for source in sources if not has_files(REPOSITORY / source)]
    assert not missing, f"COPY sources absent from a clean clone: {missing}"


# === Tests: .dockerignore and LICENSE =======================================================


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for required in (".venv", "resources", ".git", ".env", "data", "logs"):
        assert required in patterns, f".dockerignore does not exclude {required}"


def test_license_is_the_gpl_v3() -> None:
    text = (REPOSITORY / "LICENSE").read_text(encoding="utf-8")
    assert text.lstrip().startswith("GNU GENERAL PUBLIC LICENSE")
    assert "Version 3, 29 June 2007" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert len(text) > 30_000


def test_log_file_path_takes_the_replica_hostname(tmp_path: Path) -> None:
    import logging
    import socket

    from app.runtime.logging_setup import configure_logging

    configure_logging("INFO", str(tmp_path / "service-{hostname}.log"))
    try:
        logging.getLogger("app.test").info("hello from this replica")
        written = tmp_path / f"service-{socket.gethostname()}.log"
        assert "hello from this replica" in written.read_text()
    finally:
        configure_logging("INFO", "")


def test_resources_folder_is_kept_with_its_readme_only() -> None:
    """The design's top-level resources/ exists in a clone; bundles in it are not committed."""
    import subprocess

    assert (REPOSITORY / "resources" / "README.md").is_file()
    for path in ("resources/run", "resources/releases/x/faiss_ivf.index"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPOSITORY, check=False)
        assert ignored.returncode == 0, f"{path} would be committed"
    kept = subprocess.run(["git", "check-ignore", "-q", "resources/README.md"], cwd=REPOSITORY,
                          check=False)
    assert kept.returncode == 1


# === Tests: issue 18, the rough edges of the first real `docker compose up` =================
# Each fails on the deployment files as they were; deploy/compose_smoke.py checks the same
# behaviours on the running stack (make compose-smoke).


def duration_seconds(value: str) -> float:
    """Compose's durations (`40s`, `1m30s`, `500ms`) and nginx's (`60s`, `2m`, `10`)."""
    total, text = 0.0, str(value).strip()
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)?", text)
    assert parts and "".join(a + b for a, b in parts) == text, f"not a duration: {value!r}"
    for number, unit in parts:
        total += float(number) * units[unit or "s"]
    return total


def nginx_directives(name: str, conf: str | None = None) -> list[str]:
    """The arguments of every `name ...;` directive in deploy/nginx.conf (comments dropped)."""
    text = re.sub(r"#[^\n]*", "", conf if conf is not None else NGINX_CONF.read_text())
    return [match.strip() for match in re.findall(rf"(?<![\w$]){name}\s+([^;{{}}]*);", text)]


def nginx_block(name: str) -> str:
    """The body of the first `name ... {` block (nested braces balanced)."""
    text = re.sub(r"#[^\n]*", "", NGINX_CONF.read_text())
    start = re.search(rf"(?<![\w@]){re.escape(name)}\s*[^;{{}}]*\{{", text)
    assert start, f"no {name} block in deploy/nginx.conf"
    depth, index = 1, start.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        index += 1
    return text[start.end() : index - 1]


def test_gunicorn_opens_no_control_socket() -> None:
    """Item 1: gunicorn 27 puts a control socket in the user's home (the root-owned /app)
    and logs `Control server error: [Errno 13] Permission denied` at every start."""
    assert "--no-control-socket" in gunicorn_command()


def test_the_entry_point_retries_a_refused_post_on_another_replica() -> None:
    """Item 2: a 503 (starting, busy, going away) or a refused connection is retried on
    another replica for POST /infer too (`non_idempotent`: a recognition changes nothing),
    within a bounded number of tries and time. At least 3 tries: in a rollout the entry
    point can hold a removed replica's address and a starting one's at once (make
    compose-smoke lost 8 of 24 POSTs to 502s with two failing addresses and 2 tries)."""
    server = nginx_block("server")
    (next_upstream,) = nginx_directives("proxy_next_upstream", server)
    conditions = set(next_upstream.split())
    assert {"error", "timeout", "http_503", "non_idempotent"} <= conditions
    (tries,) = nginx_directives("proxy_next_upstream_tries", server)
    assert 3 <= int(tries) <= 4
    (bound,) = nginx_directives("proxy_next_upstream_timeout", server)
    assert 0 < duration_seconds(bound) <= 30
    (connect,) = nginx_directives("proxy_connect_timeout", server)
    assert duration_seconds(connect) <= 5  # a gone replica is given up quickly


def error_pages(location: str) -> dict[str, str]:
    """`error_page` of a location body: status code -> its target (`=` kept in front)."""
    pages = {}
    for args in nginx_directives("error_page", location):
        *codes, target = args.split()
        answer = next((c for c in codes if c.startswith("=")), "")
        pages.update({code: answer + target for code in codes if not code.startswith("=")})
    return pages


def test_nginx_own_502_is_tried_once_more_from_a_new_choice_of_replica() -> None:
    """nginx/nginx#1656: when the replicas' addresses are re-resolved while a request is
    being tried (a replica removed in a rollout, its address timing out), nginx drops the
    request's remaining tries with "no live upstreams", a 502 (make compose-smoke: 2 of 155
    POSTs). Such a 502 goes once more to the replicas, from a named location (the method and
    the request body kept), whose own 502 ends in the JSON answer: bounded."""
    first = error_pages(nginx_block("location /"))
    assert first["502"] == "=@retry"  # `=`: the client gets the retry's own answer
    assert nginx_directives("recursive_error_pages", nginx_block("location /")) == ["on"]
    retry = nginx_block("location @retry")
    assert nginx_directives("proxy_pass", retry) == nginx_directives(
        "proxy_pass", nginx_block("location /"))
    assert "recursive_error_pages" not in retry  # a 502 there is final
    last = error_pages(retry)["502"]
    assert nginx_directives("proxy_pass", nginx_block(f"location {last}")) == []


def test_nginx_own_errors_answer_json_with_retry_after() -> None:
    """Item 2: nginx's own 502/504 (no replica reachable, none answered in time) are JSON
    with Retry-After, as the service's own errors, not nginx's HTML page (a 502 after the
    retry from @retry)."""
    for code in ("502", "504"):
        location = nginx_block("location /")
        target = error_pages(location).get(code)
        for _ in range(3):  # follow error_page from location to location, at most 3 hops
            assert target and target.lstrip("=").startswith("@"), f"no error_page for {code}"
            location = nginx_block(f"location {target.lstrip('=')}")
            if code not in error_pages(location):
                break
            target = error_pages(location)[code]
        body = location
        assert nginx_directives("default_type", body) == ["application/json"]
        retry = nginx_directives("add_header", body)
        assert any(re.fullmatch(r"Retry-After\s+\d+\s+always", r) for r in retry), retry
        returned = re.findall(r"return\s+(\d{3})\s+'([^']*)';", body)
        assert len(returned) == 1, body
        status, payload = returned[0]
        assert status == code
        assert "error" in json.loads(payload.replace("\\n", ""))


def test_the_entry_point_starts_with_the_replicas() -> None:
    """Item 3: nginx waited for the replicas' `service_healthy` (first probe at 30 s): the
    entry point did not exist for ~30 s after every `up`. It starts with them now (it
    re-resolves them itself) and its own health shows within 10 s."""
    entry = services()[ENTRY]
    assert entry["depends_on"][INFER]["condition"] == "service_started"
    assert duration_seconds(entry["healthcheck"]["interval"]) <= 10
    assert duration_seconds(services()[INFER]["healthcheck"]["interval"]) <= 10


def test_replicas_get_longer_than_gunicorns_graceful_timeout_to_stop() -> None:
    """Item 4: Docker kills a container 10 s after SIGTERM by default; gunicorn gives the
    requests in flight --graceful-timeout (30 s). Compose must wait longer."""
    graceful = float(option(gunicorn_command(), "--graceful-timeout") or 30)
    for name, service in services().items():
        if service.get("build") or "descriptor-infer-service" in str(service.get("image")):
            if name == ENTRY:
                continue
            grace = service.get("stop_grace_period")
            assert grace and duration_seconds(grace) > graceful, f"{name}: {grace}"


def test_token_rotation_recreates_replicas_one_at_a_time() -> None:
    """Item 5: `docker compose up -d` recreates every replica at once (a POST meanwhile got
    nginx's 502); docs/operations.md's rotation uses the rolling script, which waits for the new
    replica's /readyz and nginx's DNS refresh before stopping an old one."""
    script = REPOSITORY / "deploy" / "compose-rollout.sh"
    assert script.stat().st_mode & 0o111, "deploy/compose-rollout.sh is not executable"
    text = script.read_text()
    assert "--no-recreate" in text and "--scale" in text and "/readyz" in text
    valid = re.search(r"valid=(\d+)s", NGINX_CONF.read_text())
    wait = re.search(r"RESOLVE_WAIT:-(\d+)", text)
    assert valid and wait and int(wait.group(1)) > int(valid.group(1))
    stop = re.search(r"STOP_TIMEOUT:-(\d+)", text)
    assert stop and float(stop.group(1)) >= duration_seconds(
        services()[INFER]["stop_grace_period"])
    readme = (REPOSITORY / "docs" / "operations.md").read_text()
    rotation = readme[readme.index("### Rotating proxy tokens"):]
    rotation = rotation[: rotation.index("\n### ", 5)]
    first_step = rotation[rotation.index("\n1. "):rotation.index("\n2. ")]
    assert "deploy/compose-rollout.sh" in first_step


def test_logs_go_to_docker_with_rotation_not_to_files_per_container() -> None:
    """Item 6: files named after the container piled up with every recreate. The image and
    compose log to stdout only, and Docker rotates what it keeps."""
    assert dockerfile_env()["LOG_FILE_PATH"] == ""
    for name, service in services().items():
        if name == INFER:
            assert environment_of(service)["LOG_FILE_PATH"] == ""
            assert "/app/logs" not in named_volume_mounts(service)
        logging_ = service.get("logging") or {}
        assert logging_.get("driver") == "json-file", f"{name}: {logging_}"
        options = logging_.get("options") or {}
        assert options.get("max-size") and int(options.get("max-file", 0)) >= 1, name


def test_nginx_version_requirement_is_met_and_written_down() -> None:
    """Item 7: `resolve` in an upstream server line needs nginx >= 1.27.3; `nginx:1.27` is a
    finished mainline line. The image is a maintained stable line (even minor) at or above
    it, and the requirement is written where an operator changing the image looks."""
    image = str(services()[ENTRY]["image"])
    match = re.fullmatch(r"nginx:(\d+)\.(\d+)(?:\.(\d+))?(-alpine)?", image)
    assert match, image
    major, minor = int(match.group(1)), int(match.group(2))
    assert (major, minor) >= (1, 28) and minor % 2 == 0, f"{image}: not a stable line >= 1.28"
    assert "1.27.3" in NGINX_CONF.read_text()
    assert "1.27.3" in COMPOSE_FILE.read_text()


def test_idle_connections_are_closed_by_nginx_before_gunicorn() -> None:
    """Item 10: gunicorn closed idle keep-alive connections after 2 s while nginx kept them
    60 s: a POST sent on a connection being closed became a 502 nginx would not retry."""
    upstream = nginx_block("upstream descriptor_infer")
    assert nginx_directives("keepalive", upstream), "no upstream keepalive: nothing to order"
    (idle,) = nginx_directives("keepalive_timeout", upstream)
    keep_alive = option(gunicorn_command(), "--keep-alive")
    assert keep_alive is not None, "gunicorn's --keep-alive defaults to 2 s"
    assert float(keep_alive) > duration_seconds(idle) + 5


def test_dockerfile_installs_the_tesseract_model_for_the_collector_line_reader() -> None:
    """The lead's OCR engine (tesserocr) reads Debian's English model from TESSDATA_PREFIX."""
    runs = [run for run in dockerfile_all("RUN") if "apt-get install" in run]
    assert runs and all("--no-install-recommends" in run for run in runs)
    assert any("tesseract-ocr-eng" in run.split() for run in runs)
    assert dockerfile_env()["TESSDATA_PREFIX"] == "/usr/share/tesseract-ocr/5/tessdata"
