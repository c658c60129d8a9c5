# Card-recognition inference service for MTGScan.
#
# One gunicorn process with a thread pool (gthread): the FAISS index, the memory-mapped
# descriptor bundle and OpenCV are loaded once and shared by every request thread. No
# --preload: FAISS/OpenCV/h5py state is not safe across fork(), and the background
# scheduler thread (nightly refresh, resource preparation) must start inside the worker.
FROM python:3.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OPENCV_IO_MAX_IMAGE_PIXELS=50000000 \
    OPENCV_IO_MAX_IMAGE_WIDTH=20000 \
    OPENCV_IO_MAX_IMAGE_HEIGHT=20000 \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    OMP_WAIT_POLICY=PASSIVE \
    MALLOC_ARENA_MAX=2 \
    HDF5_USE_FILE_LOCKING=FALSE \
    FLASK_ENV=production \
    RESOURCES_DIR=/app/resources \
    SCRYFALL_DATA_DIR=/app/data \
    LOG_FILE_PATH= \
    TESSDATA_PREFIX=/usr/share/tesseract-ocr/5/tessdata \
    ORT_DISABLE_TELEMETRY=1 \
    PORT=5001

# The wheels of opencv-python-headless, faiss-cpu, h5py and psycopg2-binary bundle their
# own libraries; libgomp1 is the OpenMP runtime FAISS falls back on where it does not.
# tesseract-ocr-eng is the English trained model (eng.traineddata, at TESSDATA_PREFIX) the
# collector-line reader (tesserocr) loads.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 tesseract-ocr-eng \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin app

WORKDIR /app

# Dependencies first, so that a code change does not reinstall them.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

COPY app/ ./app/
# read by gunicorn from the working directory: JSON logs, Prometheus multiprocess hook
COPY gunicorn.conf.py ./

# Owned by the service user so that named volumes mounted here inherit the ownership.
RUN mkdir -p /app/resources /app/data /app/logs \
    && chown app:app /app/resources /app/data /app/logs

USER app

EXPOSE 5001

# /healthz answers as soon as the process is up; readiness (bundle loaded) is /readyz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '5001'), timeout=4)" || exit 1

# Shell form so that ${PORT} expands; exec so that gunicorn is PID 1 and gets SIGTERM.
# create_serving_app, not create_app: it also starts loading the bundle, the hot-reload
# watcher and the nightly schedule (create_app alone builds an app that never gets ready).
# 32 threads: waiting requests must reach the app's admission gate (MAX_CONCURRENT_INFER
# recognitions run, the rest wait INFER_QUEUE_TIMEOUT then get 503 + Retry-After).
# No --access-logfile: the app logs one line per request itself, with its request id.
# --no-control-socket: gunicorn 27 would put its control socket in the user's home, the
# root-owned /app, and log a permission error at every start (nothing here uses it).
# --keep-alive 75: longer than the entry point's idle upstream connections (nginx's
# keepalive_timeout 60s, deploy/nginx.conf), so nginx, not gunicorn, closes an idle one and
# never sends a request on a connection gunicorn is closing. --graceful-timeout 30: requests
# in flight at SIGTERM get 30 s (compose's stop_grace_period and Kubernetes'
# terminationGracePeriodSeconds are longer).
CMD exec gunicorn --bind 0.0.0.0:${PORT} --worker-class gthread --workers 1 --threads 32 \
    --timeout 120 --graceful-timeout 30 --keep-alive 75 --no-control-socket \
    "app:create_serving_app()"
