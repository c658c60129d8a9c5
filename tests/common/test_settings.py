"""Settings are read once, validated, and a bad value names its variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app import create_app
from app.common.settings import Settings, SettingsError
from tests.support.environment import REPOSITORY


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings.port == 5001
    assert settings.resources_dir == Path("resources")
    assert settings.scryfall_api_url == "https://api.scryfall.com"
    assert settings.refresh_cron == "0 2 * * *"
    assert not settings.uses_postgres and not settings.uses_redis


def test_original_readme_variables_are_accepted() -> None:
    env = {
        "POSTGRES_USER": "mtg",
        "POSTGRES_PASSWORD": "secret",
        "POSTGRES_DB": "mtgscan",
        "POSTGRES_HOST": "mtg-db",
        "POSTGRES_PORT": "5433",
        "REDIS_HOST": "redis",
        "SCRYFALL_DATA_DIR": "/app/data",
        "LOG_FILE_PATH": "/app/logs/service.log",
        "LOG_LEVEL": "debug",
        "FRONTEND_URL": "https://mtgscan.example",
        "FLASK_ENV": "production",
        "INFER_API_TOKENS": "a, b ,",
    }
    settings = Settings.from_env(env)
    assert settings.uses_postgres and settings.uses_redis
    assert settings.postgres_port == 5433
    assert settings.log_level == "DEBUG"
    assert settings.infer_api_tokens == ("a", "b")
    assert "secret" not in str(settings.public_dict())


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("POSTGRES_PORT", "x"),
        ("REFRESH_ENABLED", "maybe"),
        ("REFRESH_CRON", "every night"),
        ("SCRYFALL_API_URL", "ftp://scryfall"),
        ("LOG_LEVEL", "loud"),
        ("FLASK_ENV", "staging"),
        ("MAX_CONTENT_LENGTH", "-1"),
        ("REFRESH_LANGS", "en;ja"),
        ("REFRESH_LANGS", "english"),
        ("REFRESH_LANGS", "any,en"),
        ("REFRESH_EXCLUDED_LAYOUTS", "token, Art Series"),
        ("REFRESH_MIN_HIT_RATE", "1.5"),
        ("REFRESH_MIN_HIT_RATE", "high"),
    ],
)
def test_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_refresh_selection_settings_become_the_refresh_options() -> None:
    from app.pipeline.refresh_options import EXCLUDED_LAYOUTS, RefreshOptions

    defaults = RefreshOptions.from_settings(Settings.from_env({}))
    assert defaults.langs == ("en",) and defaults.exclude_layouts == EXCLUDED_LAYOUTS
    assert defaults.min_hit_rate == 0.85 and defaults == RefreshOptions()
    settings = Settings.from_env({"REFRESH_LANGS": " en, JA ,en", "REFRESH_MIN_HIT_RATE": "0.7",
                                  "REFRESH_EXCLUDED_LAYOUTS": "token,emblem,token"})
    assert settings.refresh_langs == ("en", "ja")
    assert settings.refresh_excluded_layouts == ("emblem", "token")
    options = RefreshOptions.from_settings(settings, force=True)
    assert options.langs == ("en", "ja") and options.force
    assert options.exclude_layouts == frozenset({"token", "emblem"})
    assert options.min_hit_rate == 0.7
    every = Settings.from_env({"REFRESH_LANGS": "any", "REFRESH_EXCLUDED_LAYOUTS": "none"})
    assert every.refresh_langs == () and every.refresh_excluded_layouts == ()


def test_unknown_recognition_profile_is_refused(base_config: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="RECOGNITION_PROFILE"):
        create_app({**base_config, "RECOGNITION_PROFILE": "nonsense"})


def test_production_without_tokens_refuses_to_start(base_config: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="INFER_API_TOKENS"):
        create_app({**base_config, "FLASK_ENV": "production"})


def test_start_up_with_bad_port_prints_one_clear_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app"],
        env={
            "PORT": "abc",
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "PYTHONPATH": str(REPOSITORY),
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["configuration error: PORT must be an integer, got 'abc'"]


def test_a_developers_dotenv_does_not_leak_into_apps_made_with_overrides(
    base_config: dict[str, str],
) -> None:
    """create_app(overrides) - what every test does - must not read the repository's .env
    (a developer's INFER_API_TOKENS or POSTGRES_HOST there would change what tests mean)."""
    import os

    dotenv = REPOSITORY / ".env"
    if dotenv.exists():
        pytest.skip("a real .env is present: not overwriting it (CI's fresh clone has none)")
    dotenv.write_text("INFER_API_TOKENS=leaked-token\nPOSTGRES_HOST=db.invalid\n")
    try:
        app = create_app(base_config)
        settings = app.config["SETTINGS"]
        assert settings.infer_api_tokens == ()
        assert not settings.uses_postgres
    finally:
        dotenv.unlink()
        for name in ("INFER_API_TOKENS", "POSTGRES_HOST"):
            os.environ.pop(name, None)




def run_probe(tmp_path: Path, source: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run pytest in a child process on a one-file test `source`, with this suite's conftest
    and configuration and the environment `env`, as `make test` would in that shell."""
    probe = tmp_path / "test_probe.py"
    probe.write_text(source)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "--rootdir", str(REPOSITORY), "-c", str(REPOSITORY / "pyproject.toml"),
               "--confcutdir", str(REPOSITORY / "tests"), "-p", "tests.conftest", str(probe)]
    return subprocess.run(command, env={**env, "PYTHONPATH": str(REPOSITORY)}, capture_output=True,
                          text=True, timeout=120, cwd=REPOSITORY, check=False)


def test_ci_fails_instead_of_skipping_when_a_service_is_missing(tmp_path: Path) -> None:
    """Under TEST_REQUIRE_SERVICES=1 (CI) an unreachable PostgreSQL fails the PostgreSQL
    tests; without it (a developer's machine) they are skipped with the reason."""
    import os

    source = "def test_needs_postgres(pg_database):\n    pass\n"
    env = {**os.environ, "TEST_POSTGRES_PORT": "1"}
    required = run_probe(tmp_path, source, {**env, "TEST_REQUIRE_SERVICES": "1"})
    assert required.returncode != 0 and "1 error" in required.stdout, required.stdout
    assert "TEST_REQUIRE_SERVICES=1" in required.stdout
    optional = run_probe(tmp_path, source, {k: v for k, v in env.items()
                                            if k != "TEST_REQUIRE_SERVICES"})
    assert optional.returncode == 0 and "1 skipped" in optional.stdout, optional.stdout


def test_the_settings_variables_of_the_shell_do_not_reach_the_tests(tmp_path: Path) -> None:
    """A developer's shell exporting what the settings read, under an old name too
    (PREPARE_ON_START=true disagreed with the tests' BOOTSTRAP_MISSING_BUNDLE=false and failed
    every test), leaves a test's app as its overrides make it."""
    import os

    shell = {"PREPARE_ON_START": "true", "PORT": "not-a-port", "INFER_AUTH": "maybe",
             "POSTGRES_HOST": "db.invalid", "RECOGNITION_PROFILE": "nonsense"}
    source = (
        "import os\n"
        "def test_app(app):\n"
        f"    assert not set(os.environ) & set({sorted(shell)!r})\n"
        "    settings = app.config['SETTINGS']\n"
        "    assert not settings.bootstrap_missing_bundle and not settings.uses_postgres\n"
    )
    result = run_probe(tmp_path, source, {**os.environ, **shell})
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-3000:]


def test_every_variable_the_settings_read_is_scrubbed() -> None:
    """The scrub list is what Settings.from_env looks up: every current and old name."""
    from app.common.settings import ENV_VARIABLES, RENAMED_VARIABLES
    from tests.support.environment import scrub_settings_environment, settings_variables

    assert {*ENV_VARIABLES, *RENAMED_VARIABLES} <= settings_variables()
    environ = {"PREPARE_ON_START": "true", "PORT": "1", "TEST_POSTGRES_PORT": "5432"}
    assert scrub_settings_environment(environ) == ["PORT", "PREPARE_ON_START"]
    assert environ == {"TEST_POSTGRES_PORT": "5432"}
