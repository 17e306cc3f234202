"""The labelling page's HTTP server: the standard library's ``ThreadingHTTPServer``.

Why the standard library: the page needs a dozen routes, one user and no templates;
``http.server`` does that with nothing to install, starts in milliseconds, and keeps
the whole request path (token, routes, static files) in one short module that a
reviewer can read. A thread per request lets the page prefetch several candidates at
once while a decision is written.

Safety: the server binds to 127.0.0.1 by default. Any other ``host`` needs a token
(given in the URL once, then kept in a cookie, as Jupyter does); requests without
it get 403. On loopback the ``Host`` header must name the loopback address (a web
page on another site cannot reach the server through DNS rebinding), and decisions
are only taken as ``application/json`` POSTs, which a foreign page cannot send
without a CORS preflight that this server never grants. Static files come from a
fixed list shipped in the package, and candidates are asked for by number, so no
request can read any other file.
"""

import hmac
import http.server
import ipaddress
import json
import secrets
import socket
import sys
import threading
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from ..exceptions import LabellingError, OutputError

__all__ = ["make_server", "LOOPBACK"]

#: The default address.
LOOPBACK = "127.0.0.1"

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
# Cookies are per host, not per port: each server's cookie carries its port.
_COOKIE = "otrain_label_token_{port}"


def is_loopback(host):
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _static_files():
    folder = resources.files("otrain.labelling") / "static"
    return {route: ((folder / name).read_bytes(), kind) for route, (name, kind) in _STATIC.items()}


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # Refuse a port another program holds (SO_REUSEADDR only lets TIME_WAIT go).
    allow_reuse_address = False

    def handle_error(self, request, client_address):
        # A browser that closes a connection early (a tab closed or reloaded while a
        # stamp loads) is not an error worth a traceback on the user's terminal.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "otrain-label"
    # Set on the subclass made by make_server.
    session = None
    token = None
    static = None
    allowed_hosts = None
    log = None

    # -- plumbing -------------------------------------------------------------------

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        if self.log is not None:
            self.log(f"{self.address_string()} {format % args}")

    def _send(self, status, body, kind="application/json", headers=()):
        if isinstance(body, dict | list):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status, message):
        self._send(status, {"error": message})

    def _allowed(self, query):
        """Host check on loopback, token check elsewhere; True when the request may go on."""
        if self.allowed_hosts is not None:
            host = (self.headers.get("Host") or "").lower()
            if host not in self.allowed_hosts:
                self._error(403, "wrong Host header: open the URL the server printed")
                return False
        if self.token is None:
            return True
        given = query.get("token", [""])[0] or self._cookie_token()
        if given and hmac.compare_digest(given.encode(), self.token.encode()):
            return True
        self._error(403, "a token is needed: open the URL with ?token=... that the server printed")
        return False

    def _cookie_token(self):
        for part in (self.headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == _COOKIE.format(port=self.server.server_address[1]):
                return value
        return ""

    def _body(self):
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            raise LabellingError("decisions are sent as application/json")
        length = int(self.headers.get("Content-Length") or 0)
        if length > 1_000_000:
            raise LabellingError("request too large")
        try:
            return json.loads(self.rfile.read(length) or b"{}")
        except ValueError as err:
            raise LabellingError("the request is not JSON") from err

    # -- routes -----------------------------------------------------------------------

    def do_GET(self):  # noqa: N802 - the base class's name
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not self._allowed(query):
            return
        path = url.path
        try:
            if path in self.static:
                body, kind = self.static[path]
                headers = []
                if self.token is not None and "token" in query:
                    headers.append(
                        (
                            "Set-Cookie",
                            f"{_COOKIE.format(port=self.server.server_address[1])}={self.token}; "
                            "HttpOnly; SameSite=Strict; Path=/",
                        )
                    )
                self._send(200, body, kind, headers)
            elif path == "/api/state":
                self._send(200, self.session.state())
            elif path == "/api/queue":
                n = int(query.get("n", ["50"])[0])
                self._send(200, {"queue": self.session.queue(min(max(n, 1), 500))})
            elif path.startswith("/api/candidate/"):
                self._send(200, self.session.candidate(path.rsplit("/", 1)[1]))
            else:
                self._error(404, "not found")
        except (LabellingError, ValueError) as err:
            self._error(404 if "no candidate" in str(err) else 400, str(err))
        except Exception as err:  # noqa: BLE001 - the page gets an answer, never a hang
            self._error(500, f"{type(err).__name__}: {err}")

    do_HEAD = do_GET

    def do_POST(self):  # noqa: N802 - the base class's name
        url = urlsplit(self.path)
        if not self._allowed(parse_qs(url.query)):
            return
        try:
            body = self._body()
            if url.path == "/api/label":
                self._send(200, self.session.decide(body.get("decisions", [])))
            elif url.path == "/api/undo":
                self._send(200, self.session.undo(body.get("count", 1)))
            else:
                self._error(404, "not found")
        except LabellingError as err:
            self._error(404 if "no candidate" in str(err) else 409, str(err))
        except (ValueError, TypeError, AttributeError) as err:
            self._error(400, f"bad request: {err}")
        except OSError as err:
            self._error(500, f"cannot write: {err}")
        except Exception as err:  # noqa: BLE001 - the page gets an answer, never a hang
            self._error(500, f"{type(err).__name__}: {err}")


def make_server(session, *, host=LOOPBACK, port=0, token=None, log=None):
    """A server for ``session``, bound and ready for ``serve_forever()``.

    Parameters
    ----------
    session : LabellingSession
    host : str, default "127.0.0.1"
        Address to bind. Any non-loopback address requires ``token``.
    port : int, default 0
        Port; 0 takes a free one.
    token : str or None
        Token required in every request (``?token=`` once, then a cookie). When
        ``host`` is not loopback and ``token`` is None, a random one is made.
    log : callable, optional
        Called with one line per request (quiet by default).

    Returns
    -------
    server : http.server.ThreadingHTTPServer
    url : str
        The URL to open (with the token when there is one).

    Raises
    ------
    OutputError
        If the address cannot be bound (the port is taken, the host is not local).
    """
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    try:
        server = _Server((host, int(port)), _Handler)
    except OSError as err:
        if err.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise OutputError(
                f"port {port} on {host} is taken; choose another with --port, or leave "
                "--port out to take a free one"
            ) from err
        raise OutputError(
            f"cannot serve on {host}:{port} ({err.strerror or err}); check --host"
        ) from err
    bound_port = server.server_address[1]
    allowed_hosts = None
    if is_loopback(host):
        allowed_hosts = {f"{name}:{bound_port}" for name in (host, "localhost", "127.0.0.1")}
    handler = type(
        "Handler",
        (_Handler,),
        {
            "session": session,
            "token": token,
            "static": _static_files(),
            "allowed_hosts": allowed_hosts,
            "log": staticmethod(log) if log is not None else None,
        },
    )
    server.RequestHandlerClass = handler
    shown = host if is_loopback(host) or host not in ("0.0.0.0", "::") else socket.gethostname()
    if ":" in shown:
        shown = f"[{shown}]"
    url = f"http://{shown}:{bound_port}/"
    if token is not None:
        url += f"?token={token}"
    return server, url


def serve_in_thread(server):
    """Run ``server`` in a daemon thread (tests, notebooks); returns the thread."""
    # A short poll interval: shutdown() waits for at most one.
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        daemon=True,
        name="otrain-label",
    )
    thread.start()
    return thread
