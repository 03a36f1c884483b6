"""Alerts of two teams reach their own Slack and e-mail receivers in a real Alertmanager (issue 17).

The shipped routing tree and receivers, unchanged; only where they deliver is redirected: the
Slack webhook URL to an HTTP server on loopback and the SMTP smarthost to a minimal SMTP server
on loopback (and group waits to 0 s, so the test takes seconds, not the 30 s a human gets).
"""

from __future__ import annotations

import json
import re
import socketserver
import subprocess
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

from tests.helpers.prometheus import free_port, poll
from tests.helpers.tools import REPO, require_tool

CONFIG = REPO / "manifests" / "monitoring" / "alertmanager.yaml"


class _Slack(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        # The shipped title: "[FIRING] <alertname> <namespace>/<schedule>".
        _, name, where = body["attachments"][0]["title"].split(" ")
        self.server.received.append(("slack", body["channel"], f"{name.removeprefix('Thresher')} {where}"))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


class _Smtp(socketserver.StreamRequestHandler):
    """Just enough SMTP for Alertmanager: no TLS, no AUTH advertised."""

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self.reply("220 test ESMTP")
        recipients, data = [], []
        while line := self.rfile.readline():
            command = line.decode().strip()
            verb = command.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250 test")
            elif verb == "RCPT":
                recipients.append(command.split(":", 1)[1].strip(" <>"))
                self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 go on")
                while (body := self.rfile.readline()) not in (b".\r\n", b""):
                    data.append(body.decode())
                # Alertmanager's default subject: "[FIRING:1] <group labels> (<other common labels>)";
                # the route groups by namespace and schedule, and the alert name comes first after.
                subject = next((d for d in data if d.startswith("Subject:")), "")
                match = re.search(r"\] (\S+) (\S+) \(Thresher(\w+) ", subject)
                for to in recipients:
                    self.server.received.append(("email", to, f"{match[3]} {match[1]}/{match[2]}" if match else subject))
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok")


def _test_config(tmp_path, smtp_port: int, slack_url: str) -> str:
    config = yaml.safe_load(CONFIG.read_text())
    webhook = tmp_path / "slack-url"
    webhook.write_text(slack_url)
    config["global"].update({"smtp_smarthost": f"127.0.0.1:{smtp_port}", "smtp_require_tls": False,
                             "slack_api_url_file": str(webhook)})
    for key in ("smtp_auth_username", "smtp_auth_password_file"):
        config["global"].pop(key)

    def fast(route: dict) -> None:
        route.update({"group_wait": "0s", "group_interval": "1s"})
        for child in route.get("routes", []):
            fast(child)

    fast(config["route"])
    path = tmp_path / "alertmanager.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_two_teams_reach_their_receivers_in_a_real_alertmanager(tmp_path):
    received: list[tuple[str, str, str]] = []
    slack = ThreadingHTTPServer(("127.0.0.1", 0), _Slack)
    smtp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Smtp)
    slack.received = smtp.received = received
    for server in (slack, smtp):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    port = free_port()
    config = _test_config(tmp_path, smtp.server_address[1], f"http://127.0.0.1:{slack.server_address[1]}/hook")
    with open(tmp_path / "alertmanager.log", "wb") as log:
        proc = subprocess.Popen(
            [require_tool("prometheus-alertmanager"), f"--config.file={config}", f"--storage.path={tmp_path}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        poll(lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200, timeout=30,
             describe="alertmanager ready")

        def alert(name: str, severity: str, team: str, schedule: str) -> dict:
            return {"labels": {"alertname": name, "severity": severity, "team": team, "namespace": "data",
                               "schedule": schedule}, "annotations": {"summary": name}}

        alerts = [alert("ThresherRunFailed", "warning", "data-platform", "tmdb"),
                  alert("ThresherScheduleStale", "critical", "data-platform", "tmdb-weekly"),
                  alert("ThresherRunFailed", "warning", "agronomy", "drone"),
                  alert("ThresherConsecutiveFailures", "critical", "agronomy", "drone-nightly")]
        request = urllib.request.Request(f"{url}/api/v2/alerts", data=json.dumps(alerts).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(request, timeout=5).close()
        expected = {
            ("slack", "#data-platform-alerts", "RunFailed data/tmdb"),  # warning: Slack only
            ("slack", "#data-platform-alerts", "ScheduleStale data/tmdb-weekly"),  # critical: Slack + e-mail
            ("email", "data-platform-oncall@example.org", "ScheduleStale data/tmdb-weekly"),
            ("email", "agronomy@example.org", "RunFailed data/drone"),  # warning: e-mail only
            ("email", "agronomy@example.org", "ConsecutiveFailures data/drone-nightly"),  # critical: both
            ("slack", "#agronomy", "ConsecutiveFailures data/drone-nightly"),
        }

        # Exactly these: nothing to the catch-all receivers (#thresher-alerts, the pager) either.
        try:
            poll(lambda: set(received) == expected, timeout=30, describe="notifications")
        except TimeoutError:
            assert set(received) == expected
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        slack.shutdown()
        smtp.shutdown()
