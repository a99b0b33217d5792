"""The reference app for WSGI servers: gunicorn's sync and gthread workers, or wsgiref.

    gunicorn --chdir loadtest/python --workers 1 --threads 8 wsgi:app     (gil's counterpart)
    gunicorn --chdir loadtest/python --workers 2 wsgi:app                 (prefork's)
    python3 loadtest/python/wsgi.py --port 8000 [--threads]               (no PyPI needed)

A handler thread blocks for /io with time.sleep, which lets go of the GIL as a database
driver's socket read does, and computes /cpu as Python code holding it.
"""

import argparse
import atexit
import signal
import sys
import time

from endpoints import Application, Offloads, Waits

_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 404: "Not Found",
            405: "Method Not Allowed", 413: "Content Too Large", 500: "Internal Server Error"}


def _server_name():
    argv0 = sys.argv[0] if sys.argv else ""
    return "gunicorn" if "gunicorn" in argv0 else "wsgiref" if __name__ == "__main__" else "wsgi"


application = Application(_server_name())
atexit.register(application.board.release)


def app(environ, start_response):
    method = environ["REQUEST_METHOD"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    application.began()
    # PATH_INFO is the decoded path's bytes as latin-1 text (PEP 3333).
    name, result = application.respond(method, environ.get("PATH_INFO", "/").encode("latin-1"), environ.get("QUERY_STRING", ""),
                                       body, environ.get("CONTENT_TYPE"))
    if isinstance(result, Waits):
        time.sleep(result.milliseconds / 1000)
        result = result.then()
    elif isinstance(result, Offloads):
        result = result.run()
    application.ended(name, result.status)
    headers = [("Content-Type", result.content_type), ("Content-Length", str(len(result.body)))] + result.headers
    start_response(f"{result.status} {_REASONS.get(result.status, '')}", headers)
    return [result.body]


if __name__ == "__main__":
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    parser = argparse.ArgumentParser(description="Serve the reference app with Python's own wsgiref.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", action="store_true", help="a thread per connection (socketserver.ThreadingMixIn)")
    options = parser.parse_args()

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, *arguments):
            pass

    class ThreadingServer(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    server = make_server(options.host, options.port, app, ThreadingServer if options.threads else WSGIServer, QuietHandler)
    # SIGTERM ends the process the way Ctrl-C does, so the scoreboard slot is given back.
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(0))
    print(f"listening on http://{options.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
