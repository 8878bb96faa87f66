"""The smoke test of the real container stack (run scripts/compose-smoke, not this file).

Builds the images, starts docker-compose.yml with docker-compose.airgap.yml
(RabbitMQ and PostgreSQL built from Debian's packages) as its own compose
project on ports of its own, and checks from the host, through the published
ports only, what an operator relies on:

- the worker answers /healthz and /readyz, its image's HEALTHCHECK runs, and
  a command enqueued over AMQP from the host gets its result event;
- /metrics counts it; the console is reachable (once the worker serves it);
- `docker compose restart worker` in the middle of a load loses nothing and
  doubles nothing: every command has its event, is `done` in PostgreSQL, and
  the simulator's ledger holds exactly one effect per command (on podman that
  restart is a kill; a second round with `restart -t 45` is graceful, and
  then no command waits for a lease);
- `docker stop` drains: the worker exits 0 within the compose grace period,
  after its in-flight gateway calls finished, none left calling;
- `down` then `up` keeps the data: the commands in PostgreSQL, a message in a
  RabbitMQ queue, and a repeated command is replayed from the database;
- `docker compose up sandbox` (profile sandbox) starts the one-container demo
  in a database of its own.

It prints figures: image sizes, build times, time from `up` to ready. Only
the standard library: the host needs no AMQP or PostgreSQL client.
"""

import argparse
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "backoffice-smoke"
WORK = ROOT / "target" / "compose-smoke"
WORKER_IMAGE = "backoffice-worker:latest"
IMAGES = [
    WORKER_IMAGE,
    "backoffice-standin/rabbitmq:bookworm",
    "backoffice-standin/postgres:bookworm",
    "docker.io/library/debian:bookworm-slim",
    "docker.io/library/rust:1-bookworm",
]
# Not the machine's own services' ports (5672, 15672, 25672, 5432, ...), not
# RabbitMQ's CLI distribution ports (35672-35682), and below the kernel's
# ephemeral range (32768-60999): a port in that range can be taken by any
# outgoing connection in the moment `restart` frees it (a run failed so, with
# "bind: address already in use" for the admin port).
PORTS = {
    "BACKOFFICE_AMQP_PORT": 21672,
    "BACKOFFICE_MANAGEMENT_PORT": 21673,
    "BACKOFFICE_SIMULATOR_PORT": 21099,
    "BACKOFFICE_ADMIN_PORT": 21090,
    "BACKOFFICE_SANDBOX_ADMIN_PORT": 21091,
}
RABBIT_AUTH = "backoffice:backoffice"
COMMAND_QUEUE = "backoffice.commands"
DEAD_LETTER_QUEUE = "backoffice.commands.dead"
RESULT_EXCHANGE = "backoffice.events"
EVENTS_QUEUE = "smoke.events"


class Failed(Exception):
    pass


class Report:
    """Collects results; a failed check is printed and counted, and the
    steps that depend on it stop (Failed) rather than pile up noise."""

    def __init__(self):
        self.passed = 0
        self.failed = []
        self.skipped = []
        self.figures = []

    def section(self, title):
        print(f"\n== {title}", flush=True)

    def check(self, ok, what, detail=""):
        if ok:
            self.passed += 1
            print(f"  ok    {what}" + (f" ({detail})" if detail else ""), flush=True)
        else:
            self.failed.append(what)
            print(f"  FAIL  {what}" + (f": {detail}" if detail else ""), flush=True)
        return ok

    def require(self, ok, what, detail=""):
        if not self.check(ok, what, detail):
            raise Failed(what)

    def skip(self, what, why):
        self.skipped.append(what)
        print(f"  skip  {what}: {why}", flush=True)

    def figure(self, name, value):
        self.figures.append((name, value))
        print(f"  figure  {name}: {value}", flush=True)


# --- processes ----------------------------------------------------------------


def env():
    e = dict(os.environ)
    e.setdefault("DOCKER_HOST", "unix:///run/podman/podman.sock")
    # Compose v2 would build with BuildKit, whose image it would pull.
    e["COMPOSE_BAKE"] = "false"
    e["DOCKER_BUILDKIT"] = "0"
    for name, port in PORTS.items():
        e[name] = str(port)
    return e


ENV = env()
CONFIG_FILE = None  # set in main(): the generated worker configuration


def sh(args, check=True, timeout=600, log=None, input=None):
    """Runs a command; returns its CompletedProcess (stdout and stderr text)."""
    e = dict(ENV)
    if CONFIG_FILE:
        e["BACKOFFICE_CONFIG_FILE"] = str(CONFIG_FILE)
    done = subprocess.run(
        args, cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout, input=input
    )
    if log is not None:
        with open(log, "a") as f:
            f.write(f"$ {' '.join(args)}\n{done.stdout}{done.stderr}\n")
    if check and done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise Failed(f"`{' '.join(args)}` exited {done.returncode}:\n{tail}")
    return done


def compose(*args, **kw):
    files = ["-f", "docker-compose.yml", "-f", "docker-compose.airgap.yml"]
    return sh(["docker", "compose", "-p", PROJECT, *files, *args], **kw)


def up(*services, timeout=600):
    """`compose up -d`, once more if the engine fails while starting containers.

    Podman 4.3 under load sometimes fails a container start with an error of
    its own ("write child: broken pipe"); `up -d` is idempotent, so the
    stack is started again and the engine's error is printed, not hidden.
    """
    for attempt in (1, 2, 3):
        done = compose("up", "-d", *services, log=WORK / "up.log", timeout=timeout, check=False)
        if done.returncode == 0:
            return done
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-3:])
        if attempt == 3:
            raise Failed(f"`docker compose up -d {' '.join(services)}` exited {done.returncode}:\n{tail}")
        print(f"  note  the engine failed to start the stack (attempt {attempt}), starting it again:\n{tail}")
        time.sleep(2)


def container_id(service):
    return compose("ps", "-q", service).stdout.strip()


def inspect(container, template):
    return sh(["docker", "inspect", "-f", template, container]).stdout.strip()


def psql(sql):
    done = compose("exec", "-T", "postgres", "psql", "-U", "postgres", "-d", "backoffice", "-tA", "-F", "|", "-c", sql)
    return [line.split("|") for line in done.stdout.strip().splitlines() if line]


def scalar(sql):
    rows = psql(sql)
    return int(rows[0][0]) if rows else 0


# --- HTTP ---------------------------------------------------------------------


def http(method, url, body=None, auth=None, timeout=10):
    """(status, text); connection errors are status 0."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as error:
        return 0, str(error)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def status_without_redirects(url):
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError):
        return 0


def admin(path):
    return f"http://127.0.0.1:{PORTS['BACKOFFICE_ADMIN_PORT']}{path}"


def simulator(path):
    return f"http://127.0.0.1:{PORTS['BACKOFFICE_SIMULATOR_PORT']}{path}"


def management(method, path, body=None):
    url = f"http://127.0.0.1:{PORTS['BACKOFFICE_MANAGEMENT_PORT']}/api{path}"
    status, text = http(method, url, body, auth=RABBIT_AUTH)
    if status >= 300 or status == 0:
        raise Failed(f"management API {method} {path}: {status} {text[:200]}")
    return json.loads(text) if text.strip() else None


def queue_messages(name):
    """Messages in a queue; the broker's statistics need a moment after a start."""
    def count():
        messages = management("GET", f"/queues/%2f/{name}").get("messages")
        return None if messages is None else (messages,)

    return wait_until(f"statistics of queue {name}", count, 60, 0.5)[0]


def publish(body, message_id=None):
    """Publishes to the command queue through the management API, as a
    producer on the host would (persistent, JSON)."""
    properties = {"delivery_mode": 2, "content_type": "application/json"}
    if message_id:
        properties["message_id"] = message_id
    routed = management(
        "POST",
        "/exchanges/%2f/amq.default/publish",
        {
            "properties": properties,
            "routing_key": COMMAND_QUEUE,
            "payload": body,
            "payload_encoding": "string",
        },
    )
    if not routed.get("routed"):
        raise Failed(f"the broker did not route message {message_id}")


class Events:
    """The result events, read from a durable queue of our own bound to the
    result exchange (declared before anything is enqueued)."""

    def __init__(self):
        self.by_id = {}  # command id -> [(event, message_id)]

    def declare(self):
        management("PUT", f"/queues/%2f/{EVENTS_QUEUE}", {"durable": True, "auto_delete": False})
        management(
            "POST", f"/bindings/%2f/e/{RESULT_EXCHANGE}/q/{EVENTS_QUEUE}", {"routing_key": "#"}
        )

    def drain(self):
        while True:
            got = management(
                "POST",
                f"/queues/%2f/{EVENTS_QUEUE}/get",
                {"count": 500, "ackmode": "ack_requeue_false", "encoding": "auto"},
            )
            for message in got:
                event = json.loads(message["payload"])
                mid = message["properties"].get("message_id")
                self.by_id.setdefault(event["command_id"], []).append((event, mid))
            if len(got) < 500:
                return

    def wait_for(self, ids, timeout):
        deadline = time.monotonic() + timeout
        while True:
            self.drain()
            missing = [i for i in ids if i not in self.by_id]
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.5)


def wait_until(what, predicate, timeout, interval=0.25):
    """Polls a condition (the stack offers no event to await from the host)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def ready():
    return http("GET", admin("/readyz"), timeout=3)[0] == 200


def health(container):
    return inspect(container, "{{if .State.Health}}{{.State.Health.Status}}{{end}}")


# Each load its own range of payment ids, so that every command has its own payment.
ID_OFFSETS = {"smoke-load": 0, "smoke-drain": 100_000, "smoke-graceful": 200_000}


def bodies(prefix, n):
    """Alternates Paymentz captures of 10.00 (an even 8-digit id is an
    authorized 1000.00 EUR payment on first touch) and Praxis captures (in
    full, of an authorized payment): one payment per command, so the
    simulator's ledger must show exactly one effect per command."""
    base = ID_OFFSETS[prefix]
    out = []
    for i in range(n):
        if i % 2 == 0:
            out.append({"id": f"{prefix}-{i}", "gateway": "paymentz", "operation": "capture",
                        "payment_id": str(50_000_000 + 2 * (base + i)), "amount": "10.00"})
        else:
            out.append({"id": f"{prefix}-{i}", "gateway": "praxis", "operation": "capture",
                        "payment_id": str(60_000_000 + base + i)})
    return out


def ledger_effects(payment_ids):
    status, text = http("GET", simulator("/admin/ledger?limit=1000000"), timeout=30)
    if status != 200:
        raise Failed(f"simulator ledger: {status} {text[:200]}")
    counts = {}
    for entry in json.loads(text)["entries"]:
        if entry["payment_id"] in payment_ids:
            counts[entry["payment_id"]] = counts.get(entry["payment_id"], 0) + 1
    return counts


def in_clause(ids):
    return ",".join("'" + i.replace("'", "''") + "'" for i in ids)


# --- the steps ----------------------------------------------------------------


def image_exists(name):
    return sh(["docker", "image", "inspect", name], check=False).returncode == 0


def build(report, args):
    report.section("build (docker compose build, no registry)")
    log = WORK / "build.log"
    log.write_text("")
    first = not image_exists(WORKER_IMAGE)
    started = time.monotonic()
    compose("build", log=log, timeout=3600)
    took = time.monotonic() - started
    report.check(all(image_exists(i) for i in IMAGES[:3]), "the worker and stand-in images are built")
    label = "first build (no worker image before)" if first else "build (worker image existed)"
    report.figure(label, f"{took:.0f} s")
    started = time.monotonic()
    compose("build", log=log, timeout=3600)
    report.figure("warm build, nothing changed", f"{time.monotonic() - started:.0f} s")

    healthcheck = sh(
        ["podman", "image", "inspect", "--format", "{{json .HealthCheck}}", WORKER_IMAGE], check=False
    ).stdout
    report.check("9090/healthz" in healthcheck, "the worker image keeps its HEALTHCHECK", healthcheck.strip()[:120])
    user = sh(["podman", "image", "inspect", "--format", "{{.Config.User}}", WORKER_IMAGE]).stdout.strip()
    report.check(user.split(":")[0] not in ("", "0", "root"), "the worker image runs as a non-root user", user)
    cmd = sh(["podman", "image", "inspect", "--format", "{{json .Config.Cmd}}", WORKER_IMAGE]).stdout
    report.check("--sandbox" not in cmd, "the worker image's default command is not the sandbox", cmd.strip())

    if args.edit_rebuild:
        # A copy of the build context with one source file changed: only the
        # crate's own layer is rebuilt, on top of the cached dependencies.
        with tempfile.TemporaryDirectory(prefix="smoke-edit-") as context:
            for name in ("Dockerfile", ".dockerignore", "Cargo.toml", "Cargo.lock"):
                shutil.copy(ROOT / name, context)
            for name in ("src", "migrations"):
                shutil.copytree(ROOT / name, Path(context) / name)
            with open(Path(context) / "src" / "main.rs", "a") as f:
                f.write(f"\n// compose-smoke edit {time.time()}\n")
            started = time.monotonic()
            sh(["docker", "build", "-t", "backoffice-worker:smoke-edit", context], log=log, timeout=3600)
            report.figure("warm build after a source edit (dependencies cached)", f"{time.monotonic() - started:.0f} s")
            sh(["docker", "rmi", "backoffice-worker:smoke-edit"], check=False)

    for image in IMAGES:
        size = sh(["podman", "image", "inspect", "--format", "{{.Size}}", image], check=False).stdout.strip()
        if size:
            report.figure(f"image {image}", f"{int(size) / 1e6:.0f} MB")


def make_config(report):
    """docker/worker.toml for the smoke stack, with `[http] allow_http = true`
    (needed once plain-http gateway URLs off loopback are refused without it)
    when this build knows the key; without it when the build refuses it."""
    report.section("configuration")
    base = (ROOT / "docker" / "worker.toml").read_text()
    with_key = base if re.search(r"(?m)^\s*allow_http\s*=", base) else base + "\n[http]\nallow_http = true\n"
    probe = WORK / "probe.toml"
    probe.write_text(with_key)
    # `show` parses the whole configuration, then fails to reach this database.
    name = f"smoke-probe-{os.getpid()}"
    done = sh(
        ["docker", "run", "--name", name, "-v", f"{probe}:/etc/backoffice/backoffice.toml:ro",
         "-e", "DATABASE_URL=postgres://probe@127.0.0.1:1/probe", WORKER_IMAGE, "show", "probe"],
        check=False,
    )
    sh(["docker", "rm", "-f", name], check=False)
    refused = "allow_http" in done.stderr
    config = WORK / "worker.toml"
    config.write_text(base if refused else with_key)
    if refused:
        report.check(True, "this build does not know [http] allow_http: the smoke stack runs without it",
                     done.stderr.strip().splitlines()[-1])
    else:
        report.check(True, "this build accepts [http] allow_http = true: the smoke stack sets it")
        if with_key != base:
            print("  note  docker/worker.toml lacks `[http] allow_http = true`, which this build accepts")
    return config


def start(report, label):
    started = time.monotonic()
    up()
    wait_until("/readyz to answer 200", ready, 300)
    took = time.monotonic() - started
    report.figure(f"`up` to /readyz ready ({label})", f"{took:.1f} s")
    return took


def check_basics(report, events):
    report.section("the stack answers")
    for service in ("rabbitmq", "postgres", "simulator", "worker"):
        cid = container_id(service)
        report.require(bool(cid) and inspect(cid, "{{.State.Running}}") == "true", f"{service} is running")
    worker = container_id("worker")
    report.check(wait_until("the worker's health check to pass", lambda: health(worker) == "healthy", 90),
                 "the worker's HEALTHCHECK passes (docker inspect: healthy)")
    status, text = http("GET", admin("/healthz"))
    report.check(status == 200, "/healthz answers 200", f"{status} {text[:80]}")
    status, text = http("GET", admin("/readyz"))
    report.check(status == 200, "/readyz answers 200 (broker and database up)", text.strip()[:120])

    events.declare()
    report.section("a command from the host, over AMQP")
    # The project's own producer command, in the worker image, on the host's
    # network: it reaches the broker through the published AMQP port.
    name = f"smoke-enqueue-{os.getpid()}"
    done = sh(
        ["docker", "run", "--name", name, "--network", "host",
         "-v", f"{CONFIG_FILE}:/etc/backoffice/backoffice.toml:ro",
         "-e", f"AMQP_URL=amqp://{RABBIT_AUTH}@127.0.0.1:{PORTS['BACKOFFICE_AMQP_PORT']}/%2f",
         WORKER_IMAGE, "enqueue", "--gateway", "paymentz", "--operation", "capture",
         "--payment-id", "40000002", "--amount", "10.00", "--id", "smoke-first", "--wait", "--timeout", "60s"],
        check=False,
    )
    code = int(inspect(name, "{{.State.ExitCode}}") or -1)
    sh(["docker", "rm", "-f", name], check=False)
    try:
        event = json.loads(done.stdout)
    except ValueError:
        event = {}
    report.require(
        code == 0 and event.get("command_id") == "smoke-first" and event.get("outcome") == "succeeded",
        "`enqueue --wait` from the host gets its result event: succeeded",
        f"exit {code}, outcome {event.get('outcome')}" if event else f"exit {code}: {done.stderr.strip()[-300:]}",
    )
    missing = events.wait_for(["smoke-first"], 30)
    report.check(not missing, "the event is on the result exchange too (our queue bound to backoffice.events)")

    status, metrics = http("GET", admin("/metrics"))
    line = next(
        (l for l in metrics.splitlines()
         if l.startswith("backoffice_commands_total{") and 'outcome="succeeded"' in l and "paymentz" in l),
        "",
    )
    report.check(status == 200 and line.endswith(" 1"), "/metrics is scraped and counts it", line or f"status {status}")

    report.section("the console")
    status = status_without_redirects(admin("/console"))
    if status == 404:
        # The console is off until [console] has tokens, and the compose
        # stack's docker/worker.toml configures none (a default token on a
        # published port would be a known password).
        report.skip("the console is reachable at /console", "404: no [console] tokens configured in this stack")
    else:
        report.check(status in (200, 302, 303, 401), "the console is reachable at /console",
                     f"status {status} (a login redirect or 401 is reachable)")


def check_restart(report, events, n, prefix="smoke-load", restart_args=(), latency_ms=300, publishers=4):
    command = " ".join(["docker compose restart", *restart_args, "worker"])
    report.section(f"`{command}` in the middle of {n} commands ({latency_ms} ms gateway)")
    load = bodies(prefix, n)
    ids = [b["id"] for b in load]
    payment_ids = {b["payment_id"] for b in load}
    status, text = http("PUT", simulator("/admin/faults"), {"latency_ms": latency_ms})
    report.require(status == 200, f"the simulator answers in {latency_ms} ms", f"{status} {text[:120]}")
    published = [0]
    published_at = [None]
    error = []
    lock = threading.Lock()
    queue = list(reversed(load))

    def producer():
        try:
            while True:
                with lock:
                    if not queue:
                        break
                    body = queue.pop()
                publish(json.dumps(body), message_id=body["id"])
                with lock:
                    published[0] += 1
                    if published[0] == n:
                        published_at[0] = time.monotonic()
        except Exception as e:  # noqa: BLE001 - reported below
            error.append(e)

    before = inspect(container_id("worker"), "{{.State.StartedAt}}")
    threads = [threading.Thread(target=producer) for _ in range(publishers)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    wait_until("a third of the load to be published", lambda: published[0] >= n // 3 or error, 120, 0.05)
    at_published = published[0]
    at = dict(psql(
        f"SELECT 'done', count(*) FILTER (WHERE state = 'done') FROM commands WHERE id LIKE '{prefix}-%' "
        f"UNION ALL SELECT 'calling', count(*) FILTER (WHERE phase = 'calling') FROM commands WHERE id LIKE '{prefix}-%'"
    ))
    restart_started = time.monotonic()
    restart_wall = time.time()
    compose("restart", *restart_args, "worker", timeout=120)
    restart_took = time.monotonic() - restart_started
    for thread in threads:
        thread.join()
    report.require(not error, "every command was published", str(error[:1]))
    after = inspect(container_id("worker"), "{{.State.StartedAt}}")
    report.check(after != before, "the worker container was restarted",
                 f"at {at_published}/{n} published, {at['done']} done, {at['calling']} calling a gateway; "
                 f"restart took {restart_took:.1f} s")
    report.check(int(at["done"]) < n and int(at["calling"]) > 0,
                 "the restart came while commands were running and others still to come")
    # Docker stops the container as `docker stop` does (SIGTERM, then its stop
    # timeout); podman 4.3's Docker API, given no -t, kills it at once. Either
    # way nothing may be lost: a killed worker's calls are found `calling` and
    # resumed, inquiring first, once their lease (90 s) has expired.
    since = sh(["docker", "logs", "--since", str(int(restart_wall)), container_id("worker")])
    graceful = "SIGTERM: stopping" in since.stdout + since.stderr
    report.figure(f"`{command}` stopped the worker", "gracefully (SIGTERM)" if graceful
                  else "with a kill (no SIGTERM: podman's restart ignores the stop timeout)")
    if restart_args:
        report.check(graceful, "with -t, the restart stops the worker gracefully (SIGTERM)")
    wait_until("/readyz after the restart", ready, 120)

    missing = events.wait_for(ids, 300)
    took = time.monotonic() - started
    report.check(not missing, f"all {n} commands have their result event", f"missing {len(missing)}: {missing[:5]}")
    # Delivery is at least once: an event seen twice has the same message_id.
    # A command delivered again (unacked when the worker stopped) gets a new
    # event marked replayed: true, as any producer duplicate does.
    originals = {i: [m for e, m in events.by_id.get(i, []) if not e.get("replayed")] for i in ids}
    report.check(
        all(len(set(m)) == 1 for m in originals.values()),
        "one original event per command (an event seen twice has the same message_id)",
        f"{sum(len(m) > 1 for m in originals.values())} seen twice",
    )
    replays = sum(1 for i in ids for e, _ in events.by_id.get(i, []) if e.get("replayed"))
    report.figure("commands redelivered by the broker across the restart (answered replayed: true)", replays)
    outcomes = {row[0]: int(row[1]) for row in psql(
        "SELECT state || '/' || coalesce(outcome, '-'), count(*) FROM commands "
        f"WHERE id LIKE '{prefix}-%' GROUP BY 1")}
    report.check(outcomes == {"done/succeeded": n}, f"PostgreSQL: all {n} commands done, succeeded", str(outcomes))
    counts = ledger_effects(payment_ids)
    doubled = {p: c for p, c in counts.items() if c != 1}
    report.check(
        len(counts) == n and not doubled,
        "the simulator's ledger: exactly one effect per command (nothing lost, nothing doubled)",
        f"{len(counts)} payments with effects, {len(doubled)} with more than one",
    )
    report.figure(f"publishing {n} commands through the management API", f"{published_at[0] - started:.1f} s")
    slow = psql(
        "SELECT count(*) FILTER (WHERE decided_at - received_at > interval '10 seconds'), "
        "round(extract(epoch FROM max(decided_at - received_at))::numeric, 1), "
        "round(extract(epoch FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY decided_at - received_at))::numeric, 2) "
        f"FROM commands WHERE id LIKE '{prefix}-%'"
    )[0]
    report.figure("received to decided, per command", f"median {slow[2]} s, max {slow[1]} s, {slow[0]} over 10 s")
    if graceful:
        # A graceful stop finishes its calls and hands back what it had not
        # started: nothing should wait for the dead instance's lease.
        report.check(int(slow[0]) == 0, "after a graceful restart no command waited for a lease to expire",
                     f"{slow[0]} took over 10 s")
    report.figure(f"{n} commands with `{command}` in the middle, publish to last event", f"{took:.1f} s")
    report.figure(f"`{command}`", f"{restart_took:.1f} s")
    http("PUT", simulator("/admin/faults"), {"latency_ms": 0})


def check_stop(report, events, n=200, latency_ms=3000):
    # A Paymentz capture inquires first (its before-snapshot), then captures:
    # two calls of `latency_ms` each; a Praxis capture is one call.
    report.section(f"`docker stop` drains: {n} commands calling a gateway that takes {latency_ms} ms")
    status, text = http("PUT", simulator("/admin/faults"), {"latency_ms": latency_ms})
    report.require(status == 200, "the simulator's latency is set", f"{status} {text[:120]}")
    load = bodies("smoke-drain", n)
    ids = [b["id"] for b in load]
    worker = container_id("worker")
    grace = inspect(worker, "{{.Config.StopTimeout}}")
    report.check(grace == "45", "the container's stop timeout is compose's stop_grace_period (45 s)", grace)
    for body in load:
        publish(json.dumps(body), message_id=body["id"])
    calling = wait_until(
        "gateway calls in flight",
        lambda: scalar("SELECT count(*) FROM commands WHERE id LIKE 'smoke-drain-%' AND phase = 'calling'"),
        60, 0.1,
    )
    started = time.monotonic()
    sh(["docker", "stop", worker], timeout=120)  # the container's own stop timeout
    took = time.monotonic() - started
    code = inspect(worker, "{{.State.ExitCode}}")
    printed = sh(["docker", "logs", "--tail", "60", worker])
    logs = printed.stdout + printed.stderr
    report.check(code == "0", "the worker exited 0 (not killed)", f"exit {code}")
    report.check(took < 45, "it stopped within the grace period", f"{took:.1f} s with {calling} calls in flight")
    report.check(
        took >= (latency_ms / 1000) * 0.5,
        "it waited for the calls in flight (it did not just drop them)",
        f"{took:.1f} s for a {latency_ms} ms gateway",
    )
    report.check("all in-flight commands finished" in logs, "its log says: all in-flight commands finished")
    left = scalar("SELECT count(*) FROM commands WHERE id LIKE 'smoke-drain-%' AND phase = 'calling'")
    interrupted = scalar(
        "SELECT count(*) FROM attempts a JOIN commands c ON c.id = a.command_id "
        "WHERE c.id LIKE 'smoke-drain-%' AND a.status <> 'completed'"
    )
    report.check(left == 0 and interrupted == 0, "no command left calling, no attempt left in flight or interrupted",
                 f"{left} calling, {interrupted} attempts not completed")
    report.figure(f"`docker stop` with {calling} commands calling a {latency_ms} ms gateway", f"{took:.1f} s")

    http("PUT", simulator("/admin/faults"), {"latency_ms": 0})
    compose("start", "worker")
    wait_until("/readyz after the start", ready, 120)
    missing = events.wait_for(ids, 180)
    report.check(not missing, f"after a new start, all {n} have their result event", f"missing {len(missing)}")
    counts = ledger_effects({b["payment_id"] for b in load})
    report.check(len(counts) == n and all(c == 1 for c in counts.values()),
                 "one effect per command in the simulator's ledger", f"{len(counts)} payments")


def check_persistence(report, events):
    report.section("`docker compose down`, then `up`: the data stays (volumes)")
    # An unreadable message: dead-lettered, so the dead-letter queue (in
    # RabbitMQ's volume) and the dead_letters table both hold something.
    publish("this is not JSON {", message_id="smoke-unreadable")
    wait_until("the unreadable message in the dead-letter queue", lambda: queue_messages(DEAD_LETTER_QUEUE) >= 1, 60, 0.5)
    before = {
        "commands": scalar("SELECT count(*) FROM commands"),
        "attempts": scalar("SELECT count(*) FROM attempts"),
        "dead_letters": scalar("SELECT count(*) FROM dead_letters"),
        "dead-letter queue": queue_messages(DEAD_LETTER_QUEUE),
    }
    compose("down", timeout=300)
    report.require(not compose("ps", "-a", "-q").stdout.strip(), "`down` removed every container")
    start(report, "second start, with data")
    after = {
        "commands": scalar("SELECT count(*) FROM commands"),
        "attempts": scalar("SELECT count(*) FROM attempts"),
        "dead_letters": scalar("SELECT count(*) FROM dead_letters"),
        "dead-letter queue": queue_messages(DEAD_LETTER_QUEUE),
    }
    report.check(after == before, "PostgreSQL's rows and RabbitMQ's queued messages are all still there", str(after))
    # The same command again: answered from the database (the simulator, in
    # memory, was restarted and knows nothing of it).
    events.declare()
    publish(json.dumps(bodies("smoke-load", 1)[0]), message_id="smoke-replay")

    def replayed():
        events.drain()
        return [e for e, _ in events.by_id.get("smoke-load-0", []) if e.get("replayed")]

    replays = wait_until("the replayed event of smoke-load-0", replayed, 60, 0.5)
    report.check(replays[-1].get("outcome") == "succeeded",
                 "a repeated command is replayed from the stored outcome (replayed: true, succeeded)")


def check_sandbox(report):
    report.section("the one-container demo: `docker compose up sandbox` (profile sandbox)")
    started = time.monotonic()
    up("sandbox", timeout=300)
    url = f"http://127.0.0.1:{PORTS['BACKOFFICE_SANDBOX_ADMIN_PORT']}/readyz"
    wait_until("the sandbox's /readyz", lambda: http("GET", url, timeout=3)[0] == 200, 120)
    report.figure("`up sandbox` to its /readyz ready", f"{time.monotonic() - started:.1f} s")
    printed = sh(["docker", "logs", container_id("sandbox")])
    report.check("SANDBOX MODE" in printed.stdout + printed.stderr, "it runs `run --sandbox` (its log says SANDBOX MODE)")
    databases = {row[0] for row in psql("SELECT datname FROM pg_database")}
    report.check("backoffice_sandbox" in databases, "in a database of its own (backoffice_sandbox)", str(sorted(databases)))
    compose("--profile", "sandbox", "stop", "sandbox", timeout=120)


def ports_free(report):
    busy = []
    for name, port in PORTS.items():
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(f"{port} ({name})")
    report.require(not busy, "the smoke stack's ports are free: " + ", ".join(str(p) for p in PORTS.values()),
                   ("in use: " + ", ".join(busy) + "; set the variables named to other ports") if busy else "")


def main():
    global CONFIG_FILE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=2000, help="commands in the restart test")
    parser.add_argument("--edit-rebuild", action="store_true",
                        help="also time a rebuild after a source edit (compiles the crate in release)")
    parser.add_argument("--keep", action="store_true", help="leave the stack running (and its volumes)")
    args = parser.parse_args()
    for name in PORTS:
        if os.environ.get(name):
            PORTS[name] = int(os.environ[name])
    ENV.update({name: str(port) for name, port in PORTS.items()})

    WORK.mkdir(parents=True, exist_ok=True)
    for log in ("up.log",):
        (WORK / log).write_text("")
    report = Report()
    events = Events()
    began = time.monotonic()
    clean = False
    try:
        report.section("a fresh smoke project")
        compose("--profile", "sandbox", "down", "-v", "--remove-orphans", timeout=300)
        report.check(True, f"compose project {PROJECT}: no containers, no volumes")
        ports_free(report)
        build(report, args)
        CONFIG_FILE = make_config(report)
        report.section("docker compose up (official images replaced by docker-compose.airgap.yml)")
        start(report, "first start, empty volumes")
        check_basics(report, events)
        check_restart(report, events, args.commands)
        check_restart(report, events, args.commands // 2, "smoke-graceful", ("-t", "45"))
        check_stop(report, events)
        check_persistence(report, events)
        check_sandbox(report)
        clean = True
    except Failed as error:
        report.failed.append(str(error).splitlines()[0])
        print(f"\n  FAIL  {error}", flush=True)
    except subprocess.TimeoutExpired as error:
        report.failed.append(f"timed out: {error.cmd}")
        print(f"\n  FAIL  timed out: {error}", flush=True)
    finally:
        logs = WORK / "compose-logs.txt"
        logs.write_text(compose("logs", "--no-color", "--timestamps", check=False).stdout)
        if not clean:
            print(f"\n  logs of the stack: {logs}")
            print("\n".join(logs.read_text().splitlines()[-30:]))
        if args.keep:
            print(f"\n  the stack is left running: docker compose -p {PROJECT} ...")
        else:
            compose("--profile", "sandbox", "down", "-v", "--remove-orphans", check=False, timeout=300)

    print("\n== figures")
    for name, value in report.figures:
        print(f"  {name}: {value}")
    print(f"  the whole smoke test (after the engine's set-up): {time.monotonic() - began:.0f} s")
    print(f"\ncompose-smoke: {report.passed} passed, {len(report.failed)} failed, {len(report.skipped)} skipped")
    for what in report.failed:
        print(f"  failed: {what}")
    for what in report.skipped:
        print(f"  skipped: {what}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
