"""Watch lists notify: a locus inside a watched cone is recorded once, and its owner told once per channel.

Real loci (the shared ZTF packets the web fixtures ingest), a real HTTP server standing in for a
Slack incoming webhook (one of its paths fails once, then recovers) and a real SMTP server on a
local socket; the watch lists are created through the API, and the events read back through the
API and the portal page.
"""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
from collections.abc import Iterator
from email import message_from_bytes

import pytest

from broker.config import WatchConfig
from web.watch_notify import run_once


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, dict]] = []
    fail_once: set[str] = set()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append((self.path, body))
        if self.path in type(self).fail_once:
            type(self).fail_once.discard(self.path)
            self.send_response(500)
        else:
            self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


class _SMTP(socketserver.StreamRequestHandler):
    """Just enough SMTP (RFC 5321) for smtplib.send_message: EHLO/HELO, MAIL, RCPT, DATA, QUIT."""

    messages: list[tuple[list[str], bytes]] = []

    def handle(self) -> None:
        self.wfile.write(b"220 test ESMTP\r\n")
        rcpts: list[str] = []
        while line := self.rfile.readline():
            cmd = line.strip().upper()
            if cmd.startswith((b"EHLO", b"HELO")):
                self.wfile.write(b"250 test\r\n")
            elif cmd.startswith(b"MAIL FROM"):
                rcpts = []
                self.wfile.write(b"250 ok\r\n")
            elif cmd.startswith(b"RCPT TO"):
                rcpts.append(line.split(b":", 1)[1].strip().strip(b"<>").decode())
                self.wfile.write(b"250 ok\r\n")
            elif cmd == b"DATA":
                self.wfile.write(b"354 go\r\n")
                data = b""
                while (row := self.rfile.readline()) not in (b".\r\n", b""):
                    data += row
                type(self).messages.append((rcpts, data))
                self.wfile.write(b"250 queued\r\n")
            elif cmd == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


@pytest.fixture
def servers() -> Iterator[tuple[str, int]]:
    _Hook.received, _Hook.fail_once, _SMTP.messages = [], {"/flaky"}, []
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    smtp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SMTP)
    for s in (hook, smtp):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{hook.server_address[1]}", smtp.server_address[1]
    for s in (hook, smtp):
        s.shutdown()
        s.server_close()


def test_a_locus_entering_a_watched_cone_is_recorded_and_notified_once(client, app, host_objects, user_auth,
                                                                        servers):
    hook_url, smtp_port = servers
    b = app.extensions["albireo"]
    (_, ra0, dec0), (_, ra1, dec1) = host_objects[0], host_objects[1]
    bodies = [
        {"name": "both channels", "objects": [{"ra": ra0, "dec": dec0, "radius_arcsec": 3, "label": "h0"}],
         "notify": {"webhook": hook_url + "/flaky", "email": "alice@example.org"}},
        {"name": "slack only", "objects": [{"ra": ra1, "dec": dec1, "radius_arcsec": 3, "label": "h1"}],
         "notify": {"webhook": hook_url + "/ok"}},
        {"name": "empty sky", "objects": [{"ra": 123.0, "dec": -60.0, "radius_arcsec": 3}],
         "notify": {"webhook": hook_url + "/never"}},
    ]
    assert client.post("/api/watchlists", json={**bodies[0], "notify": {"webhook": "file:///etc/passwd"}},
                       headers=user_auth).status_code == 400
    ids = []
    for body in bodies:
        r = client.post("/api/watchlists", json=body, headers=user_auth)
        assert r.status_code == 201, r.data
        ids.append(r.get_json()["data"]["id"])
    try:
        want0 = {x["locus_id"] for x in client.get(f"/api/watchlists/{ids[0]}/loci").get_json()["data"]}
        want1 = {x["locus_id"] for x in client.get(f"/api/watchlists/{ids[1]}/loci").get_json()["data"]}
        assert len(want0) == len(want1) == 1 and want0 != want1
        cfg = WatchConfig(smtp_host="127.0.0.1", smtp_port=smtp_port, timeout_s=5.0, max_attempts=3)

        first = run_once(b.index, b.cfg.web.data_dir, cfg, portal_url="http://portal.example")
        assert (first.found, first.sent, first.failed) == (2, 1, 1)  # the flaky hook answered 500
        assert sorted(p for p, _ in _Hook.received) == ["/flaky", "/ok"]
        ok_text = next(body["text"] for p, body in _Hook.received if p == "/ok")
        assert next(iter(want1)) in ok_text and "slack only" in ok_text and "h1" in ok_text
        assert f"http://portal.example/loci/{next(iter(want1))}" in ok_text
        ((rcpts, raw),) = _SMTP.messages
        mail = message_from_bytes(raw)
        assert rcpts == ["alice@example.org"] and next(iter(want0)) in mail["Subject"]
        assert next(iter(want0)) in mail.get_payload()

        second = run_once(b.index, b.cfg.web.data_dir, cfg)
        assert (second.found, second.sent, second.failed) == (0, 1, 0)  # retried: the webhook only
        assert [p for p, _ in _Hook.received].count("/flaky") == 2 and len(_SMTP.messages) == 1

        third = run_once(b.index, b.cfg.web.data_dir, cfg)
        assert (third.found, third.sent, third.failed) == (0, 0, 0)
        assert len(_Hook.received) == 3 and len(_SMTP.messages) == 1  # sent once, never again

        (ev,) = client.get(f"/api/watchlists/{ids[0]}/events").get_json()["data"]
        assert ev["locus_id"] in want0 and ev["status"] == "sent" and ev["attempts"] == 2
        assert set(ev["channels"].split(",")) == {"email", "webhook"} and ev["label"] == "h0"
        assert client.get(f"/api/watchlists/{ids[2]}/events").get_json()["data"] == []
        assert client.get("/api/watchlists/nope/events").status_code == 404
        html = client.get("/watchlists").data.decode()
        assert ev["locus_id"] in html and "status-sent" in html and "No locus has entered it yet." in html
    finally:
        for wl_id in ids:
            assert client.delete(f"/api/watchlists/{wl_id}", headers=user_auth).status_code == 204


def test_email_without_an_smtp_server_is_a_recorded_failure(client, app, host_objects, user_auth):
    b = app.extensions["albireo"]
    _, ra, dec = host_objects[2] if len(host_objects) > 2 else host_objects[0]
    body = {"name": "mail only", "objects": [{"ra": ra, "dec": dec, "radius_arcsec": 3}],
            "notify": {"email": "bob@example.org"}}
    wl_id = client.post("/api/watchlists", json=body, headers=user_auth).get_json()["data"]["id"]
    try:
        r = run_once(b.index, b.cfg.web.data_dir, WatchConfig(smtp_host="", max_attempts=1))
        assert r.failed >= 1
        events = client.get(f"/api/watchlists/{wl_id}/events").get_json()["data"]
        assert events and all(e["status"] == "failed" and "smtp_host" in e["error"] for e in events)
        # attempts used up: not tried again
        again = run_once(b.index, b.cfg.web.data_dir, WatchConfig(smtp_host="", max_attempts=1))
        assert again.failed == 0
    finally:
        client.delete(f"/api/watchlists/{wl_id}", headers=user_auth)
