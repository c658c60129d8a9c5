"""GET /metrics: Prometheus text format (the metric objects live in app/common/metrics.py).

Not behind the bearer token: Prometheus scrapes it without one, and it carries numbers only
(no settings, no card data). Keep the port on the internal network (docs/operations.md).
"""

from __future__ import annotations

from flask import Blueprint, Response

from app.common import metrics

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def scrape() -> Response:
    """Prometheus metrics of this replica (text exposition format).
    ---
    tags: [operations]
    summary: Prometheus metrics
    produces: [text/plain]
    responses:
      200:
        description: >
          Requests by route and status, latency histograms, recognition stage timings,
          answers by outcome, in-flight and refused requests, the served bundle, refresh
          runs, the update lock and reference images.
        schema: {type: string}
    """
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)
