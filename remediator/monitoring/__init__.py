"""The monitoring systems remediator asks, one module per third-party HTTP API.

* ``prometheus``: Prometheus' instant query (``GET /api/v1/query``) and the verdict of its
  samples against a threshold; used by the ``promql`` health check (activities/health.py) and
  the ``promql`` evidence (activities/diagnosis.py);
* ``alertmanager``: whether an alert (by fingerprint) is still active (``GET /api/v2/alerts``);
  used by the ``alert_resolved`` health check (activities/health.py).

Each raises a ``remediator.domain.errors.ClassifiedError`` subclass when the system cannot
answer this time (``PrometheusUnavailable``, ``AlertmanagerUnavailable``: retryable), and a
plain exception for an answer that will not change on retry (a query Prometheus rejects, a
request Alertmanager refuses), which the activities turn into a final result.
"""
