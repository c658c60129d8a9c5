"""Apps of a test: shut down, served over real HTTP on 127.0.0.1, or serving a built bundle."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from app import create_serving_app
from app.pipeline import releases
from app.wiring import startup as lifecycle


def shutdown(application: Flask) -> None:
    """Stop what an app started, so tests leave no threads or connections behind."""
    lifecycle.shutdown(application)


class LiveServer:
    """A real HTTP server on 127.0.0.1 serving an app from a thread."""

    def __init__(self, application: Flask) -> None:
        self.app = application
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, application, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)
        self.server.server_close()


def serve_bundle(config: dict[str, str], bundle: Path, name: str = "0001-A") -> Flask:
    """Promote `bundle` in the config's RESOURCES_DIR and start an app that serves it (the
    caller shuts it down: it runs a loading thread and a watcher)."""
    resources = Path(config["RESOURCES_DIR"])
    releases.promote(resources, install_release(resources, bundle, name))
    application = create_serving_app(config)
    application.extensions["prepare_thread"].join(timeout=60)
    assert application.extensions["model"].loaded, application.extensions["model"].state
    return application


def install_release(resources: Path, bundle: Path, name: str) -> Path:
    """Copy a built bundle into RESOURCES_DIR/releases/<name> (not yet promoted)."""
    target = releases.releases_dir(resources) / name
    shutil.copytree(bundle, target)
    return target
