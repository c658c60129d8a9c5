"""`make compose-smoke`: start the real compose deployment and check it as an operator would.

From the repository's own Dockerfile, docker-compose.yml and deploy/nginx.conf (plus an
override of this script's own: image builds on the host network, the entry point published
on 127.0.0.1, the Scryfall stand-in reachable as host.docker.internal), with
REFRESH_SETS=rtr against ../shared/tools/scryfall_mirror.py serving
../shared/eval/cards.jsonl.gz:

1. build, `up -d`, wait for /readyz through the nginx entry point; time it against the
   moment every replica's own /readyz answers 200 (target: <= 15 s after);
2. the entry point's nginx is >= 1.27.3 (deploy/nginx.conf's `resolve`);
3. POST /infer without a token (401), with a wrong one (403), with the right one: a photo
   of Doorkeeper (../shared/eval/photos/trifecta_webcam/dkp_c.jpg; the catalogued printing
   with that art in rtr is Doorkeeper rtr 37);
4. both replicas answered (their logs carry the X-Request-IDs sent);
5. a POST that a refusing replica (a container answering 503 to everything, joined under
   the replicas' DNS name) receives is answered 200 by another one;
6. with two more addresses under the replicas' DNS name that refuse connections (containers
   with nothing listening: what a replica just removed and one still starting are to the
   entry point during a rollout), 24 POSTs are all answered 200; and while the addresses
   of two containers removed from under that name are re-resolved (their connections time
   out meanwhile), the POSTs of 3 clients over 14 s are all answered 200 (twice);
7. token rotation under a bounded stream of POSTs (4 per second): INFER_API_TOKENS becomes
   "old,new" and deploy/compose-rollout.sh recreates the replicas one at a time; no request
   may be lost (every answer 200; a lost one is shown with nginx's error lines), and the
   new token works afterwards;
8. `down` then `up -d` keeps the release and the catalogue (same release version, same
   card count, no new refresh run);
9. `down -v` (KEEP_STACK=1 leaves it running).

Exit 0 when every check passed, 1 otherwise, 0 with "SKIPPED: ..." when there is no Docker
or no ../shared/eval. Docker: the one the environment names (DOCKER_HOST); without one, the
private dockerd of ../shared/tools/compose-standins.sh when it is running. All traffic goes to
127.0.0.1 and to the containers this script starts; every loop is bounded in time.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MTGSCAN_SHARED", ROOT.parent / "shared"))
MIRROR = SHARED / "tools" / "scryfall_mirror.py"
CATALOGUE = SHARED / "eval" / "cards.jsonl.gz"
PHOTO = SHARED / "eval" / "photos" / "trifecta_webcam" / "dkp_c.jpg"
EXPECTED = {"predicted_card_name": "Doorkeeper", "set": "rtr", "collector_number": "37"}
STANDINS_DIR = Path(os.environ.get("W", "/tmp/compose-standins"))
PROJECT = "mtgscan-smoke"
SERVICE = "descriptor-infer"
ENTRY = "descriptor-infer-service"
NGINX_MIN = (1, 27, 3)
READY_TIMEOUT_S = 900.0
ENTRY_AFTER_REPLICAS_TARGET_S = 15.0
STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:7.1f}s] {message}", flush=True)


def skip(reason: str) -> None:
    print(f"SKIPPED: {reason}", flush=True)
    sys.exit(0)


def run(args: Sequence[str], *, check: bool = True, timeout: float = 600.0,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                            env=env, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {result.returncode}:\n"
                           f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result


def find_docker() -> None:
    """Use the environment's Docker, else the stand-ins' private dockerd; skip without one."""
    if shutil.which("docker") is None:
        skip("no docker command on PATH (install Docker, or run "
             "../shared/tools/compose-standins.sh on a machine without an image registry)")
    if "DOCKER_HOST" not in os.environ and (STANDINS_DIR / "docker.sock").exists():
        os.environ["DOCKER_HOST"] = f"unix://{STANDINS_DIR / 'docker.sock'}"
        os.environ["DOCKER_CONFIG"] = str(STANDINS_DIR / "dockercfg")
        say(f"using the stand-ins' dockerd at {os.environ['DOCKER_HOST']}")
    info = run(["docker", "info", "--format", "{{.ServerVersion}}"], check=False, timeout=30)
    if info.returncode != 0:
        skip(f"no Docker daemon answers ({info.stderr.strip()[:200]}); start one, or run "
             "bash ../shared/tools/compose-standins.sh and export what it prints")
    compose = run(["docker", "compose", "version", "--short"], check=False, timeout=30)
    if compose.returncode != 0:
        skip("Docker Compose v2 (`docker compose`) is not installed")
    say(f"docker engine {info.stdout.strip()}, compose {compose.stdout.strip()}")


class Stack:
    """The compose project: the repository's files plus this script's override."""

    def __init__(self, workdir: Path, mirror_url: str, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.token = "smoke-old-" + secrets.token_hex(8)
        self.new_token = "smoke-new-" + secrets.token_hex(8)
        self.env_file = workdir / "smoke.env"
        self.override = workdir / "compose.smoke.yml"
        self.mirror_url = mirror_url
        self.password = secrets.token_hex(12)
        self.write_env(self.token)
        self.override.write_text(
            "# written by deploy/compose_smoke.py: what this machine needs, not the product\n"
            "services:\n"
            f"  {SERVICE}:\n"
            f"    build: {{context: {json.dumps(str(ROOT))}, network: host}}\n"
            "    extra_hosts: [\"host.docker.internal:host-gateway\"]\n"
            f"  {ENTRY}:\n"
            f"    ports: [\"127.0.0.1:{port}:5001\"]\n"
        )
        self.environ = dict(os.environ)
        self.environ.update({
            "COMPOSE_PROJECT_NAME": PROJECT,
            "COMPOSE_FILE": f"{ROOT / 'docker-compose.yml'}:{self.override}",
            "COMPOSE_ENV_FILE": str(self.env_file),
        })

    def write_env(self, tokens: str) -> None:
        # --env-file replaces the repository's .env: an operator's own settings stay out
        self.env_file.write_text("\n".join([
            f"POSTGRES_PASSWORD={self.password}",
            f"INFER_API_TOKENS={tokens}",
            "REFRESH_SETS=rtr",
            f"SCRYFALL_API_URL={self.mirror_url}",
            "INFER_REPLICAS=2",
            "",
        ]))

    def compose(self, *args: str, check: bool = True,
                timeout: float = 900.0) -> subprocess.CompletedProcess[str]:
        return run(["docker", "compose", "--env-file", str(self.env_file), *args],
                   check=check, timeout=timeout, env=self.environ)

    def replicas(self) -> list[str]:
        out = self.compose("ps", "-q", SERVICE).stdout
        return [line for line in out.split() if line]

    def replica_ready(self, container: str) -> bool:
        probe = run(["docker", "exec", container, "python", "-c",
                     "import urllib.request; urllib.request.urlopen("
                     "'http://127.0.0.1:5001/readyz', timeout=4)"], check=False, timeout=30)
        return probe.returncode == 0

    def get(self, path: str, timeout: float = 30.0, **kwargs: Any) -> requests.Response:
        return requests.get(self.base + path, timeout=timeout, **kwargs)

    def infer(self, token: str | None, request_id: str | None = None,
              timeout: float = 60.0) -> requests.Response:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if request_id is not None:
            headers["X-Request-ID"] = request_id
        with PHOTO.open("rb") as photo:
            return requests.post(self.base + "/infer", files={"roi_image": photo},
                                 headers=headers, timeout=timeout)


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []
        self.results: list[tuple[str, str]] = []

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        line = f"{'ok  ' if ok else 'FAIL'} {what}" + (f": {detail}" if detail else "")
        say(line)
        self.results.append(("ok" if ok else "FAIL", what + (f": {detail}" if detail else "")))
        if not ok:
            self.failed.append(what)
        return ok


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def start_mirror(workdir: Path) -> tuple[subprocess.Popen[str], str]:
    """The Scryfall stand-in on the Docker bridge's gateway address (what host-gateway is)."""
    gateway = run(["docker", "network", "inspect", "bridge", "--format",
                   "{{range .IPAM.Config}}{{.Gateway}}{{end}}"], timeout=30).stdout.strip()
    if not gateway:  # older engines leave it out: the docker0 bridge's own address
        shown = run(["ip", "-4", "-o", "addr", "show", "docker0"], timeout=30).stdout
        found = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", shown)
        if not found:
            raise RuntimeError("cannot tell the Docker bridge's address (docker0)")
        gateway = found[1]
    log = (workdir / "mirror.log").open("w")
    process = subprocess.Popen(
        [sys.executable, str(MIRROR), "--catalog", str(CATALOGUE), "--host", gateway,
         "--port", "0"], stdout=subprocess.PIPE, stderr=log, text=True)
    assert process.stdout is not None
    first = process.stdout.readline()
    match = re.search(r":(\d+)\s*$", first)
    if not match:
        process.kill()
        raise RuntimeError(f"the Scryfall stand-in did not start: {first!r}")
    say(f"Scryfall stand-in on {gateway}:{match[1]} ({CATALOGUE.name})")
    return process, f"http://host.docker.internal:{match[1]}"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_nginx_image(stack: Stack) -> None:
    """Without a registry, the stand-ins' nginx (Debian's 1.30) is tagged as the image the
    compose file names; with one, compose pulls it."""
    images = stack.compose("config", "--images").stdout.split()
    wanted = next(image for image in images if image.startswith("nginx:"))
    if run(["docker", "image", "inspect", wanted], check=False).returncode == 0:
        return
    standin = run(["docker", "image", "inspect", "standin/nginx-imported:sid"], check=False)
    if standin.returncode == 0:
        run(["docker", "tag", "nginx:1.27-alpine", wanted])
        say(f"{wanted} is not here: tagged the stand-ins' nginx (Debian's) as {wanted}")


def wait_ready(stack: Stack, checks: Checks, label: str) -> tuple[float, float]:
    """Seconds from now until every replica's /readyz, and until the entry point's /readyz,
    answer 200 (polled every 0.5 s; each replica's own with `docker exec`)."""
    started = time.monotonic()
    replicas_at: float | None = None
    entry_at: float | None = None
    seen: set[str] = set()  # each reason once (the replicas answer in turn)
    answered = False
    while time.monotonic() - started < READY_TIMEOUT_S:
        if entry_at is None:
            try:
                response = stack.get("/readyz", timeout=5)
                if not answered:
                    answered = True
                    say(f"  the entry point answers ({response.status_code}), "
                        f"{time.monotonic() - started:.1f} s after `up -d` returned")
                if response.status_code == 200:
                    entry_at = time.monotonic() - started
                else:
                    reason = f"{response.status_code}: {_reason(response)}"
                    if reason not in seen:
                        say(f"  entry point /readyz {reason}")
                        seen.add(reason)
            except requests.RequestException as exc:
                reason = f"no answer ({type(exc).__name__})"
                if reason not in seen:
                    say(f"  entry point /readyz: {reason}")
                    seen.add(reason)
        if replicas_at is None:
            ids = stack.replicas()
            if ids and all(stack.replica_ready(c) for c in ids):
                replicas_at = time.monotonic() - started
        if entry_at is not None and replicas_at is not None:
            break
        time.sleep(0.5)
    if replicas_at is None or entry_at is None:
        checks.check(False, f"{label}: ready", f"not ready within {READY_TIMEOUT_S:.0f} s")
        raise SystemExit(finish(checks))
    return replicas_at, entry_at


def _reason(response: requests.Response) -> str:
    try:
        return str(response.json().get("reason") or response.json())[:160]
    except ValueError:
        return response.text[:160].replace("\n", " ")


def requests_seen(stack: Stack, prefix: str) -> Counter[str]:
    """How many requests with X-Request-ID starting with `prefix` each replica logged."""
    seen: Counter[str] = Counter()
    for container in stack.replicas():
        logs = run(["docker", "logs", container], check=False, timeout=60)
        ids = re.findall(rf"\[({re.escape(prefix)}[^\]]*)\] POST /infer",
                         logs.stdout + logs.stderr)
        seen[container[:12]] = len(ids)
    return seen


REFUSER = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def refuse(self):
        n = int(self.headers.get('Content-Length') or 0)
        if n: self.rfile.read(n)
        body = b'{"error": "refusing (smoke test)"}'
        self.send_response(503); self.send_header('Retry-After', '1')
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body))); self.end_headers()
        self.wfile.write(body)
        print('refused', self.command, self.path, self.headers.get('X-Request-ID'), flush=True)
    do_GET = do_POST = refuse
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(('0.0.0.0', 5001), H).serve_forever()
"""


def join_as_replica(name: str, image: str, *command: str) -> None:
    """Container `name` (a leftover of that name replaced) running `command` in `image`, on
    the project's network under the replicas' DNS name: the entry point lists its address
    at its next resolve."""
    run(["docker", "rm", "-f", name], check=False)
    run(["docker", "run", "-d", "--name", name, "--network", f"{PROJECT}_default",
         "--network-alias", SERVICE, "--entrypoint", command[0], image, *command[1:]])


def check_refused_post(stack: Stack, checks: Checks, image: str) -> None:
    name = f"{PROJECT}-refuser"
    join_as_replica(name, image, "python", "-c", REFUSER)
    try:
        statuses: Counter[int] = Counter()
        refused_ids: list[str] = []
        sent = 0
        deadline = time.monotonic() + 60  # nginx re-resolves every 10 s
        while time.monotonic() < deadline and (len(refused_ids) < 3 or sent < 12):
            response = stack.infer(stack.token, request_id=f"refuse-{sent}")
            statuses[response.status_code] += 1
            sent += 1
            logs = run(["docker", "logs", name], check=False).stdout
            refused_ids = re.findall(r"refused POST /infer (\S+)", logs)
            time.sleep(0.3)
        answered = requests_seen(stack, "refuse-")
        checks.check(
            bool(refused_ids) and statuses == Counter({200: sent}),
            "a POST refused by one replica is answered by another",
            f"{sent} POSTs sent, {len(refused_ids)} of them refused (503) by the refusing "
            f"replica, client saw {dict(statuses)}; the real replicas logged "
            f"{sum(answered.values())} ({dict(answered)})",
        )
    finally:
        run(["docker", "rm", "-f", name], check=False)


def check_two_failing(stack: Stack, checks: Checks, image: str) -> None:
    """During a rollout the entry point can hold, beside the live replicas, the address of one
    just removed and one of a replica not yet listening: two tries (nginx's first choice
    and one more) may both land on those. Two containers joined under the replicas' DNS
    name, with nothing listening on 5001 (connections refused), stand for them; every POST
    must still be answered 200."""
    names = [f"{PROJECT}-silent-{n}" for n in range(2)]
    for name in names:
        join_as_replica(name, image, "sleep", "600")  # nothing listens: refused
    try:
        time.sleep(12)  # nginx re-resolves the replicas' name every 10 s
        statuses: Counter[int] = Counter()
        for n in range(24):  # bounded: 24 POSTs, one at a time
            statuses[stack.infer(stack.token, request_id=f"silent-{n}").status_code] += 1
        checks.check(statuses == Counter({200: 24}),
                     "POSTs are answered while two replica addresses refuse connections",
                     f"24 POSTs, answers {dict(statuses)} (2 live replicas, 2 refusing)")
    finally:
        for name in names:
            run(["docker", "rm", "-f", name], check=False)
        time.sleep(12)  # their addresses leave the entry point's list


def check_address_removed(stack: Stack, checks: Checks, image: str) -> None:
    """Replicas removed while the entry point still lists their addresses: requests tried
    there time out, and when nginx re-resolves the replicas meanwhile it drops their
    remaining tries ("no live upstreams", a 502; nginx/nginx#1656). Twice: two containers
    joined under the replicas' DNS name are removed once nginx lists them, and three
    clients POST until nginx has re-resolved (at most 10 s) and a little longer. Every
    answer must be 200."""
    statuses: Counter[int | str] = Counter()
    lock = threading.Lock()
    slow = 0  # answers that took a timed-out try first

    def client(number: int, deadline: float) -> None:
        nonlocal slow
        sent = 0
        while time.monotonic() < deadline and sent < 60:  # bounded in time and count
            started = time.monotonic()
            try:
                status: int | str = stack.infer(stack.token, request_id=f"removed-{number}-"
                                                f"{sent}", timeout=60).status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
            with lock:
                statuses[status] += 1
                slow += time.monotonic() - started > 0.9
            sent += 1

    names = [f"{PROJECT}-removed-{n}" for n in range(2)]
    for _ in range(2):
        for name in names:
            join_as_replica(name, image, "sleep", "600")
        time.sleep(12)  # nginx re-resolves the replicas' name every 10 s
        for name in names:
            run(["docker", "rm", "-f", name], check=False)
        deadline = time.monotonic() + 14
        threads = [threading.Thread(target=client, args=(n, deadline), daemon=True)
                   for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    sent = sum(statuses.values())
    logs = stack.compose("logs", ENTRY, check=False)
    gave_up = (logs.stdout + logs.stderr).count("no live upstreams")  # each tried again
    if not checks.check(statuses[200] == sent and sent > 0,
                        "POSTs are answered while removed replicas' addresses are re-resolved",
                        f"twice 2 addresses removed: {sent} POSTs from 3 clients, answers "
                        f"{dict(statuses)}, {slow} of them after a timed-out try; nginx gave "
                        f"up on {gave_up} with \"no live upstreams\" so far (each then tried "
                        "@retry)"):
        explain_lost(stack, [])


def check_rollout(stack: Stack, checks: Checks) -> None:
    """Token rotation step 1 (old,new) applied by the rolling script under a request stream."""
    results: list[tuple[float, int | str, float]] = []
    stop = threading.Event()
    # one request at a time, at most 4 per second: bounded in count and time

    def stream() -> None:
        n = 0
        while not stop.is_set() and n < 3000:
            sent_at = time.monotonic()
            try:
                status: int | str = stack.infer(stack.token, request_id=f"roll-{n}",
                                                timeout=60).status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
            results.append((sent_at, status, time.monotonic() - sent_at))
            n += 1
            time.sleep(max(0.0, 0.25 - (time.monotonic() - sent_at)))

    before = set(stack.replicas())
    stack.write_env(f"{stack.token},{stack.new_token}")
    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    time.sleep(2)
    started = time.monotonic()
    rollout = subprocess.run(["bash", str(ROOT / "deploy" / "compose-rollout.sh")],
                             capture_output=True, text=True, env=stack.environ, timeout=1800,
                             check=False)
    took = time.monotonic() - started
    time.sleep(3)
    stop.set()
    thread.join(timeout=90)
    for line in (rollout.stdout + rollout.stderr).splitlines():
        say(f"  rollout: {line}")
    after = set(stack.replicas())
    statuses = Counter(status for _, status, _ in results)
    lost = sum(count for status, count in statuses.items() if status != 200)
    slowest = max((seconds for _, _, seconds in results), default=0.0)
    seen = requests_seen(stack, "roll-")
    checks.check(rollout.returncode == 0 and not (before & after) and len(after) == len(before),
                 "deploy/compose-rollout.sh recreated every replica",
                 f"{len(before)} replaced by {len(after)} new in {took:.0f} s")
    if not checks.check(lost == 0, "no request lost while the replicas were recreated",
                        f"{len(results)} POSTs in {took + 5:.0f} s (one at a time, at most "
                        f"4/s), answers {dict(statuses)}, slowest {slowest:.2f} s; "
                        f"{sum(seen.values())} answered by the new replicas, the others by "
                        "the old ones before they stopped"):
        explain_lost(stack, [(sent_at - started, status) for sent_at, status, _ in results
                             if status != 200])
    response = stack.infer(stack.new_token)
    checks.check(response.status_code == 200, "the new token is accepted after the rollout",
                 f"{response.status_code}")
    stack.compose("up", "-d", timeout=600)
    checks.check(set(stack.replicas()) == after, "a later `up -d` leaves the rolled replicas",
                 f"{len(after)} replicas kept")


def explain_lost(stack: Stack, lost: list[tuple[float, int | str]]) -> None:
    """What the entry point logged about lost requests (`lost`: seconds into the rollout
    and answer of each, when known): nginx's own error lines (why no replica answered:
    refused, timed out, closed, no live upstreams)."""
    if lost:
        say("  lost: " + ", ".join(f"{status} at {at:+.1f} s into the rollout"
                                   for at, status in lost))
    logs = stack.compose("logs", "--timestamps", ENTRY, check=False)
    lines = [line for line in (logs.stdout + logs.stderr).splitlines()
             if "upstream" in line or "[error]" in line or "[crit]" in line]
    for line in lines[-30:]:
        say(f"  entry point: {line}")
    if not lines:
        say("  entry point: no error line logged")


def check_answer(stack: Stack, checks: Checks) -> None:
    none = stack.infer(None)
    wrong = stack.infer("not-the-token")
    checks.check(none.status_code == 401 and wrong.status_code == 403,
                 "POST /infer without a token is 401, with a wrong one 403",
                 f"{none.status_code} {none.json().get('error')!r}, "
                 f"{wrong.status_code} {wrong.json().get('error')!r}")
    started = time.monotonic()
    response = stack.infer(stack.token, request_id="smoke-answer")
    took = time.monotonic() - started
    body = response.json() if response.headers.get("Content-Type", "").startswith(
        "application/json") else {}
    got = {key: str(body.get(key)) for key in EXPECTED}
    checks.check(response.status_code == 200 and got == EXPECTED,
                 f"POST /infer {PHOTO.name} answers {EXPECTED['predicted_card_name']} "
                 f"({EXPECTED['set']} {EXPECTED['collector_number']})",
                 f"{response.status_code} in {took * 1000:.0f} ms: {got}, confidence "
                 f"{body.get('confidence')}, ambiguous_printing "
                 f"{body.get('ambiguous_printing')}, index_version {body.get('index_version')}, "
                 f"server timings total {body.get('timings_ms', {}).get('total')} ms")


def check_both_replicas(stack: Stack, checks: Checks) -> None:
    statuses = Counter(stack.infer(stack.token, request_id=f"spread-{n}").status_code
                       for n in range(8))
    seen = requests_seen(stack, "spread-")
    checks.check(len(seen) >= 2 and all(seen.values()) and statuses == Counter({200: 8}),
                 "both replicas answered", f"8 POSTs: {dict(statuses)}; per replica {dict(seen)}")


def release_and_catalogue(stack: Stack) -> tuple[Any, Any, int]:
    status = stack.get("/status", headers={"Authorization": f"Bearer {stack.token}"}).json()
    runs = status.get("refresh", {}).get("last_runs", [])
    return status["release"].get("version"), status["catalog"].get("cards"), len(runs)


def check_down_up(stack: Stack, checks: Checks) -> None:
    version, cards, runs = release_and_catalogue(stack)
    stack.compose("down", timeout=300)
    say("  down; up -d")
    stack.compose("up", "-d", timeout=600)
    replicas_s, entry_s = wait_ready(stack, checks, "after down/up")
    again = release_and_catalogue(stack)
    checks.check(again == (version, cards, runs), "down/up keeps the release and the catalogue",
                 f"release {version} -> {again[0]}, catalogue {cards} -> {again[1]} cards, "
                 f"refresh runs {runs} -> {again[2]}; ready in {replicas_s:.1f} s (replicas), "
                 f"{entry_s:.1f} s (entry point)")


def finish(checks: Checks) -> int:
    print("\n=== compose smoke test ===")
    for outcome, line in checks.results:
        print(f"{outcome:4} {line}")
    print(f"{len(checks.results) - len(checks.failed)} passed, {len(checks.failed)} failed")
    return 1 if checks.failed else 0


def main() -> int:
    for path in (MIRROR, CATALOGUE, PHOTO):
        if not path.exists():
            skip(f"{path} is absent (the smoke test needs ../shared: the Scryfall stand-in, "
                 "the evaluation catalogue and a photo)")
    find_docker()
    checks = Checks()
    workdir = Path(tempfile.mkdtemp(prefix="compose-smoke-"))
    mirror, mirror_url = start_mirror(workdir)
    stack = Stack(workdir, mirror_url, free_port())
    try:
        stack.compose("down", "-v", "--remove-orphans", timeout=300)  # a failed run's leftovers
        ensure_nginx_image(stack)
        started = time.monotonic()
        built = stack.compose("build", timeout=1800)
        image = next(i for i in stack.compose("config", "--images").stdout.split()
                     if "descriptor-infer" in i)
        size = run(["docker", "image", "inspect", image, "--format", "{{.Size}}"]).stdout
        say(f"built {image} in {time.monotonic() - started:.0f} s "
            f"({int(size) / 1e6:.0f} MB){' (cached layers)' if 'CACHED' in built.stderr else ''}")
        started = time.monotonic()
        stack.compose("up", "-d", timeout=600)
        say(f"up -d returned after {time.monotonic() - started:.1f} s; waiting for /readyz")
        replicas_s, entry_s = wait_ready(stack, checks, "first start")
        checks.check(entry_s - replicas_s <= ENTRY_AFTER_REPLICAS_TARGET_S,
                     "ready through the entry point <= 15 s after the replicas",
                     f"replicas ready {replicas_s:.1f} s after `up -d` returned, entry point "
                     f"{entry_s:.1f} s (REFRESH_SETS=rtr, first start: bootstrap refresh)")
        version = stack.compose("exec", "-T", ENTRY, "nginx", "-v").stderr.strip()
        numbers = tuple(int(x) for x in re.findall(r"nginx/(\d+)\.(\d+)\.(\d+)", version)[0])
        checks.check(numbers >= NGINX_MIN, "the entry point's nginx is >= 1.27.3", version)
        logs = stack.compose("logs", SERVICE, check=False).stdout
        checks.check("Control server error" not in logs and "Permission denied" not in logs,
                     "no gunicorn control-socket error in the replicas' logs")
        check_answer(stack, checks)
        check_both_replicas(stack, checks)
        check_refused_post(stack, checks, image)
        check_two_failing(stack, checks, image)
        check_address_removed(stack, checks, image)
        check_rollout(stack, checks)
        check_down_up(stack, checks)
    except Exception as exc:
        checks.check(False, "the smoke test ran to its end", f"{type(exc).__name__}: {exc}")
        tail = stack.compose("logs", "--tail", "40", check=False)
        print(tail.stdout[-6000:], tail.stderr[-2000:])
    finally:
        if os.environ.get("KEEP_STACK") == "1":
            say(f"KEEP_STACK=1: the stack is left running (project {PROJECT}, entry point "
                f"{stack.base}); take it down with docker compose -p {PROJECT} down -v")
        else:
            stack.compose("down", "-v", "--remove-orphans", check=False, timeout=300)
            say("stack taken down (volumes removed)")
        mirror.terminate()
        mirror.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
    return finish(checks)


if __name__ == "__main__":
    sys.exit(main())
