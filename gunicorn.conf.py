"""gunicorn's settings file: the Dockerfile's `gunicorn` command reads it from its working
directory (/app) by default. The command line there sets workers, threads and the bind; this
file adds what depends on the environment, as `python -m app` does (app/__main__.py):
gunicorn's own log lines in JSON with LOG_FORMAT=json, and the Prometheus multiprocess hook
when PROMETHEUS_MULTIPROC_DIR is set."""

import os

from app.common.metrics import MULTIPROC_ENV, gunicorn_child_exit
from app.common.settings import Settings, SettingsError
from app.runtime.logging_setup import gunicorn_logconfig

try:
    _log_format = Settings.from_env().log_format
except SettingsError:  # create_app stops start-up naming the variable
    _log_format = "text"

logconfig_dict = gunicorn_logconfig(_log_format)
if os.environ.get(MULTIPROC_ENV):
    child_exit = gunicorn_child_exit
