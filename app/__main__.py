"""`python -m app` (what `make run` does): validate settings, then serve with gunicorn.

Same server as in Docker: one process, a thread pool, no preload (FAISS, OpenCV and h5py
must not cross a fork; the scheduler thread must live in the serving process).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from dotenv import load_dotenv
from gunicorn.app.base import BaseApplication

from app import _check_profile
from app.common.metrics import MULTIPROC_ENV, gunicorn_child_exit
from app.common.settings import Settings, SettingsError
from app.runtime.logging_setup import gunicorn_logconfig


class _Server(BaseApplication):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        # Enough threads that waiting requests reach the admission gate, which bounds the
        # recognitions in flight and answers 503 + Retry-After after INFER_QUEUE_TIMEOUT;
        # too few would leave them queued, unbounded, in gunicorn's socket backlog instead.
        threads = 32
        options: dict[str, Any] = {
            "bind": f"0.0.0.0:{self.settings.port}",
            "workers": 1,
            "worker_class": "gthread",
            "threads": threads,
            "timeout": 120,
            "graceful_timeout": 30,
            "preload_app": False,
            "logconfig_dict": gunicorn_logconfig(self.settings.log_format),
        }
        if os.environ.get(MULTIPROC_ENV):
            options["child_exit"] = gunicorn_child_exit
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        # in the worker gunicorn forks, not in its master: FAISS's OpenMP threads started
        # before a fork can hang the child's search (faiss#5206)
        from app import create_serving_app

        return create_serving_app(self.settings)


def main() -> int:
    load_dotenv(override=False)
    try:
        settings = Settings.from_env()
        _check_profile(settings)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    _Server(settings).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
