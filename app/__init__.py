"""MTGScan card-recognition inference service.

`create_app()` builds the app without starting anything (the `flask --app app` commands and
tests); `create_serving_app()` builds it and starts its background work (bundle loading, hot
reload, nightly schedule): the gunicorn target (`app:create_serving_app()`) and what
`python -m app` serves.
"""

from __future__ import annotations

import os

# OpenCV reads its decode limits once, when cv2 is first imported; set them before any
# module of ours imports it (the Dockerfile sets the same values in ENV).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(50_000_000))
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_WIDTH", "20000")
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_HEIGHT", "20000")
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")
# BLAS and OpenMP pools: request threads supply the parallelism. OpenBLAS's own threads
# busy-wait, and on a busy 2-core machine that made FAISS training 15x slower (measured:
# 68 s vs 4 s for a 14-card bundle). Read once when numpy/faiss load, so set them here.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import logging  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from typing import Any  # noqa: E402

from dotenv import load_dotenv  # noqa: E402
from flask import Flask  # noqa: E402
from werkzeug.middleware.proxy_fix import ProxyFix  # noqa: E402

from app.common.settings import Settings, SettingsError  # noqa: E402
from app.common.version import SERVICE_NAME, __version__  # noqa: E402

__all__ = ["SERVICE_NAME", "__version__", "create_app", "create_serving_app"]


log = logging.getLogger(__name__)


def create_app(config: Settings | Mapping[str, Any] | None = None) -> Flask:
    """Build the application.

    `config` is a ready `Settings`, or a mapping of environment-style overrides
    (`{"RESOURCES_DIR": "/tmp/x"}`) laid over the process environment (`.env` is not read:
    a developer's file must not change what tests mean), or None to read the environment and
    `.env`. A bad value raises `SettingsError` naming the variable.
    """
    # Every module of app runs this file first: the layers are imported when an app is built,
    # not when a leaf module (app.common.settings, for gunicorn.conf.py) is.
    from app.api import routes
    from app.catalog import access
    from app.runtime import http_logging, logging_setup
    from app.wiring import cli
    from app.wiring import startup as lifecycle

    if isinstance(config, Settings):
        settings = config
    else:
        if config is None:  # the real start-up; overrides (tests, tools) must not read .env
            load_dotenv(override=False)
        environ = dict(os.environ)
        environ.update({key.upper(): str(value) for key, value in (config or {}).items()})
        settings = Settings.from_env(environ)
    _check_profile(settings)

    logging_setup.configure_logging(settings.log_level, settings.log_file_path,
                                    settings.log_format)
    for notice in settings.deprecations:
        log.warning("configuration: %s", notice)

    app = Flask(__name__)
    app.config.update(
        SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_content_length,
        JSON_SORT_KEYS=False,
        TESTING=settings.flask_env == "testing",
    )
    if settings.proxy_count:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app,
            x_for=settings.proxy_count,
            x_proto=settings.proxy_count,
            x_host=settings.proxy_count,
        )

    http_logging.init_app(app)
    access.init_app(app)
    routes.init_app(app)
    cli.init_app(app)
    lifecycle.init_app(app)
    return app


def create_serving_app(config: Settings | Mapping[str, Any] | None = None) -> Flask:
    """Build the application and start the serving process's background work.

    A separate call from `create_app` so that building an app (tests, `flask` commands,
    tools) never starts threads: only the process that serves asks for them, and stops them
    with `app.wiring.startup.shutdown`. See app/wiring/startup.py.
    """
    # as in create_app: not when a leaf module is imported
    from app.wiring import startup

    app = create_app(config)
    startup.start(app)
    return app


def _check_profile(settings: Settings) -> None:
    # as in create_app: not when a leaf module is imported
    from app.recognition.params import PROFILES

    if settings.recognition_profile not in PROFILES:
        raise SettingsError(
            f"RECOGNITION_PROFILE must be one of {', '.join(sorted(PROFILES))}, "
            f"got {settings.recognition_profile!r}"
        )
    if settings.is_production and not settings.infer_api_tokens:
        if settings.infer_auth != "disabled":
            raise SettingsError(
                "INFER_API_TOKENS is empty with FLASK_ENV=production: set it, or set "
                "INFER_AUTH=disabled to run without authentication on purpose"
            )
