"""The HTTP server base of the project's loopback emulators (Kubernetes API, Slack Web API).

``http.server.ThreadingHTTPServer`` with daemon threads, address reuse, and a client that
hangs up (Prometheus closing a scrape connection, a killed process) treated as normal
instead of printing a traceback.
"""

from __future__ import annotations

import sys
from http.server import ThreadingHTTPServer


class LoopbackHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)
