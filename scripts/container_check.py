"""The checks behind scripts/check-containers (run it, not this file).

Without a Docker engine, the container files are checked by the real parsers
and by the rules this project relies on:

- Dockerfile: Docker's own parser (Go, via the `dockerfile` package) and
  dockerfile-parse agree on it, hadolint passes, and the stages are what the
  deployment expects (builder with a dependency layer, slim runtime with CA
  certificates, non-root user, health check on the admin port, entry point).
- .dockerignore: everything the Dockerfile copies is in the context, target/
  and .git are not.
- docker-compose.yml: valid against the Compose specification's JSON Schema,
  loaded by Docker Compose v2 itself (`docker-compose config`), and wired as
  the worker needs (health-gated start, URLs and credentials that match, the
  worker's configuration mounted where the image looks for it, its gateway
  accounts pointing at the simulator service, the sandbox only in its
  profile, a stop grace period on every service).
- docker-compose.airgap.yml: loaded over docker-compose.yml, it replaces the
  official RabbitMQ and PostgreSQL images with stand-ins built here (their
  Dockerfiles parse, pass hadolint and start from the local Debian base) and
  keeps their health checks, volumes and environment.
- docker/base/rust.Dockerfile (the local builder image) parses and passes
  hadolint; the container scripts pass `bash -n` and compose_smoke.py compiles.
- docs/asyncapi.yaml: YAML, `asyncapi: 3.0.0`, valid against the official
  AsyncAPI 3.0.0 JSON Schema, every `$ref` resolves, channel parameters match
  their addresses, and the message examples satisfy the payload schemas.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import dockerfile
import yaml
from dockerfile_parse import DockerfileParser
from jsonschema import Draft7Validator, Draft202012Validator, FormatChecker

ROOT = Path(__file__).resolve().parent.parent
# Where the worker's image expects its configuration (its WORKDIR's ./backoffice.toml).
CONFIG_TARGET = "/etc/backoffice/backoffice.toml"
# The base image scripts/container-engine builds, under the official name.
LOCAL_DEBIAN = "docker.io/library/debian:bookworm-slim"

KNOWN_INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
    "WORKDIR",
}


class Report:
    """Collects results; a failure never stops the other checks."""

    def __init__(self):
        self.passed = 0
        self.failed = []

    def section(self, title):
        print(f"\n== {title}")

    def check(self, ok, what, detail=""):
        if ok:
            self.passed += 1
            print(f"  ok    {what}")
        else:
            self.failed.append(what)
            print(f"  FAIL  {what}" + (f": {detail}" if detail else ""))
        return ok


def run(args):
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True)


# --- Dockerfile and .dockerignore -------------------------------------------


def glob_regex(pattern):
    """A .dockerignore pattern as a regex, with Go filepath.Match semantics
    (`*` and `?` stop at `/`) plus `**` for any number of directories."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if i < len(pattern) and pattern[i] == "/":
                i += 1
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c))
        i += 1
    return re.compile(out + r"\Z")


def dockerignore_rules(path):
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negate, glob_regex(pattern)))
    return rules


def ignored(rules, relative):
    """Whether Docker leaves `relative` out of the build context: the last
    rule matching the path or one of its parent directories decides."""
    parts = relative.split("/")
    verdict = False
    for negate, regex in rules:
        if any(regex.match("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            verdict = not negate
    return verdict


def context_files(source):
    path = ROOT / source
    if path.is_dir():
        return [str(p.relative_to(ROOT)) for p in path.rglob("*") if p.is_file()]
    return [source]


def check_dockerfile(report):
    report.section("Dockerfile")
    path = ROOT / "Dockerfile"
    try:
        commands = dockerfile.parse_file(str(path))
    except dockerfile.GoParseError as error:
        report.check(False, "Docker's parser reads the Dockerfile", str(error))
        return
    report.check(True, f"Docker's parser reads the Dockerfile ({len(commands)} instructions)")
    unknown = sorted({c.cmd for c in commands} - KNOWN_INSTRUCTIONS)
    report.check(not unknown, "every instruction is a Dockerfile instruction", str(unknown))

    parsed = DockerfileParser(path=str(path))
    theirs = [i["instruction"] for i in parsed.structure if i["instruction"] != "COMMENT"]
    report.check(
        theirs == [c.cmd for c in commands],
        "dockerfile-parse reads the same instructions",
        f"{theirs} != {[c.cmd for c in commands]}",
    )

    lint = run(["hadolint", "Dockerfile"])
    report.check(lint.returncode == 0, "hadolint passes", (lint.stdout + lint.stderr).strip())

    # Stages: FROM image [AS name].
    stages, current = [], None
    for c in commands:
        if c.cmd == "FROM":
            name = c.value[2] if len(c.value) >= 3 and c.value[1].upper() == "AS" else None
            current = {"image": c.value[0], "name": name, "commands": []}
            stages.append(current)
        elif current is not None:
            current["commands"].append(c)
    report.check(len(stages) >= 2, "a multi-stage build", f"{len(stages)} stage(s)")
    if len(stages) < 2:
        return
    builder, runtime = stages[0], stages[-1]
    report.check(
        builder["image"] == "rust:1-bookworm" and builder["name"] is not None,
        "the builder is a named rust:1-bookworm stage",
        builder["image"],
    )
    report.check(
        runtime["image"] == "debian:bookworm-slim" or runtime["image"].startswith("gcr.io/distroless/"),
        "the runtime is debian:bookworm-slim or distroless",
        runtime["image"],
    )

    # The dependency layer: Cargo.toml and Cargo.lock alone, built, before the sources.
    b = builder["commands"]
    copies = [i for i, c in enumerate(b) if c.cmd == "COPY"]
    builds = [i for i, c in enumerate(b) if c.cmd == "RUN" and "cargo build" in c.value[0]]
    first_copy = b[copies[0]] if copies else None
    source_copy = next((i for i in copies if b[i].value[0] == "src"), None)
    report.check(
        first_copy is not None and sorted(first_copy.value[:-1]) == ["Cargo.lock", "Cargo.toml"],
        "the first COPY of the builder is Cargo.toml and Cargo.lock only",
    )
    report.check(
        bool(builds) and source_copy is not None and builds[0] < source_copy < builds[-1],
        "dependencies are built before src/ is copied, the crate after",
    )
    report.check(
        all("--locked" in b[i].value[0] and "--release" in b[i].value[0] for i in builds),
        "cargo builds --release --locked",
    )

    r = runtime["commands"]

    def last(cmd):
        found = [c for c in r if c.cmd == cmd]
        return found[-1] if found else None

    user = last("USER")
    report.check(
        user is not None and user.value[0].split(":")[0] not in ("root", "0"),
        "the runtime runs as a non-root user",
        user.value[0] if user else "no USER",
    )
    installs = " ".join(c.value[0] for c in r if c.cmd == "RUN")
    report.check(
        "ca-certificates" in installs or runtime["image"].startswith("gcr.io/distroless/"),
        "CA certificates are installed in the runtime",
    )
    entrypoint = last("ENTRYPOINT")
    report.check(
        entrypoint is not None and entrypoint.json and list(entrypoint.value) == ["backoffice-worker"],
        'ENTRYPOINT ["backoffice-worker"] (exec form)',
    )
    cmd = last("CMD")
    report.check(
        cmd is not None and cmd.json and list(cmd.value[:1]) == ["run"] and "--sandbox" not in cmd.value,
        'CMD ["run", ...] (exec form), not the sandbox',
        str(cmd.value if cmd else None),
    )
    workdir = last("WORKDIR")
    report.check(
        workdir is not None and workdir.value[0] == "/etc/backoffice",
        "WORKDIR /etc/backoffice: the worker finds a mounted ./backoffice.toml there",
        workdir.value[0] if workdir else "no WORKDIR",
    )
    health = last("HEALTHCHECK")
    report.check(
        health is not None
        and health.value[0] == "CMD"
        and any("9090/healthz" in v for v in health.value),
        "HEALTHCHECK requests /healthz on port 9090",
        str(health.value if health else None),
    )
    if health is not None and health.value and health.value[0] == "CMD":
        tool = health.value[1] if health.json else health.value[1].split()[0]
        report.check(
            tool != "curl" or "curl" in installs,
            "the health check's program is installed",
            tool,
        )
    report.check(
        any(c.cmd == "EXPOSE" and "9090" in " ".join(c.value) for c in r),
        "EXPOSE 9090 (the admin listener)",
    )
    stage_names = {s["name"] for s in stages if s["name"]}
    for c in r:
        for flag in c.flags:
            if flag.startswith("--from="):
                report.check(flag[7:] in stage_names, f"COPY {flag} names a stage")

    report.section(".dockerignore")
    rules = dockerignore_rules(ROOT / ".dockerignore")
    sources = [
        s
        for c in commands
        if c.cmd in ("COPY", "ADD") and not any(f.startswith("--from=") for f in c.flags)
        for s in c.value[:-1]
    ]
    for source in sources:
        files = context_files(source)
        missing = not (ROOT / source).exists()
        left_out = [f for f in files if ignored(rules, f)]
        report.check(
            not missing and not left_out,
            f"COPY source {source} is in the build context",
            "missing" if missing else f"left out by .dockerignore: {left_out[:3]}",
        )
    for outside in ["target/release/backoffice-worker", ".git/HEAD", "tests/common/mod.rs", "backoffice.toml"]:
        report.check(ignored(rules, outside), f"{outside} is not sent to the builder")


# --- docker-compose.yml -----------------------------------------------------


def check_compose(report):
    report.section("docker-compose.yml")
    path = ROOT / "docker-compose.yml"
    try:
        yaml.safe_load(path.read_text())
        report.check(True, "parses as YAML")
    except yaml.YAMLError as error:
        report.check(False, "parses as YAML", str(error))
        return
    schema = run(["check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)])
    report.check(
        schema.returncode == 0,
        "valid against the Compose specification's schema",
        (schema.stdout + schema.stderr).strip(),
    )
    loaded = compose_config(["docker-compose.yml"])
    if not report.check(
        loaded.returncode == 0, "Docker Compose loads it (docker-compose config)", loaded.stderr.strip()
    ):
        return
    services = json.loads(loaded.stdout)["services"]

    def service(name):
        found = services.get(name)
        report.check(found is not None, f"service {name} exists")
        return found or {}

    rabbit, postgres, worker = service("rabbitmq"), service("postgres"), service("worker")
    report.check(rabbit.get("image") == "rabbitmq:3.13-management", "rabbitmq:3.13-management")
    report.check(postgres.get("image") == "postgres:16", "postgres:16")
    for name, svc in (("rabbitmq", rabbit), ("postgres", postgres)):
        test = (svc.get("healthcheck") or {}).get("test") or []
        report.check(
            bool(test) and test[0] in ("CMD", "CMD-SHELL") and not svc["healthcheck"].get("disable"),
            f"{name} has a health check",
        )
    build = worker.get("build") or {}
    report.check(
        Path(build.get("context", "")) == ROOT and (ROOT / build.get("dockerfile", "Dockerfile")).is_file(),
        "the worker is built from this repository's Dockerfile",
    )
    command = worker.get("command") or []
    report.check(
        command[:1] == ["run"]
        and "--sandbox" not in command
        and "--admin-listen" in command
        and command[command.index("--admin-listen") + 1] == "0.0.0.0:9090",
        "the worker runs `run --admin-listen 0.0.0.0:9090` (not the sandbox)",
        str(command),
    )
    restart = worker.get("restart", "no")
    report.check(
        re.fullmatch(r"no|always|unless-stopped|on-failure(:[0-9]+)?", restart) is not None,
        "the worker's restart policy is one Docker knows",
        restart,
    )
    depends = worker.get("depends_on") or {}
    for name in ("rabbitmq", "postgres"):
        report.check(
            (depends.get(name) or {}).get("condition") == "service_healthy",
            f"the worker waits for {name} to be healthy",
        )
    env = worker.get("environment") or {}
    amqp = urlsplit(env.get("AMQP_URL") or "")
    database = urlsplit(env.get("DATABASE_URL") or "")
    renv, penv = rabbit.get("environment") or {}, postgres.get("environment") or {}
    report.check(
        amqp.scheme == "amqp" and amqp.hostname == "rabbitmq" and (amqp.port or 5672) == 5672,
        "AMQP_URL points at the rabbitmq service",
        env.get("AMQP_URL", "unset"),
    )
    report.check(
        (amqp.username, amqp.password)
        == (renv.get("RABBITMQ_DEFAULT_USER", "guest"), renv.get("RABBITMQ_DEFAULT_PASS", "guest")),
        "AMQP_URL has the broker's user and password",
    )
    report.check(
        database.scheme in ("postgres", "postgresql")
        and database.hostname == "postgres"
        and (database.port or 5432) == 5432,
        "DATABASE_URL points at the postgres service",
        env.get("DATABASE_URL", "unset"),
    )
    report.check(
        (database.username, database.password, database.path.lstrip("/"))
        == (penv.get("POSTGRES_USER", "postgres"), penv.get("POSTGRES_PASSWORD"), penv.get("POSTGRES_DB", "postgres")),
        "DATABASE_URL has the database's user, password and name",
    )

    def published(svc):
        return {int(p["target"]) for p in svc.get("ports") or [] if p.get("published")}

    report.check(15672 in published(rabbit), "the management UI (15672) is published")
    report.check(9090 in published(worker), "the admin listener (9090) is published")

    def mounted(svc, target):
        return next(
            (Path(v["source"]) for v in svc.get("volumes") or [] if v.get("target") == target), None
        )

    # The worker's configuration: mounted where the image's WORKDIR makes the
    # worker look, naming the compose services and the simulator.
    source = mounted(worker, CONFIG_TARGET)
    report.check(
        source is not None and source == ROOT / "docker" / "worker.toml",
        f"the worker mounts docker/worker.toml as {CONFIG_TARGET}",
        str(source),
    )
    config = tomllib.loads((ROOT / "docker" / "worker.toml").read_text())
    report.check(
        urlsplit(config["amqp"]["url"]).hostname == "rabbitmq"
        and urlsplit(config["database"]["url"]).hostname == "postgres",
        "docker/worker.toml points at the compose services",
    )

    sim = service("simulator")
    sim_command = sim.get("command") or []
    listen = sim_command[sim_command.index("--listen") + 1] if "--listen" in sim_command else ""
    report.check(
        sim_command[:1] == ["simulate"] and listen.startswith("0.0.0.0:"),
        "the simulator runs `simulate --listen 0.0.0.0:PORT`",
        str(sim_command),
    )
    report.check(sim.get("image") == worker.get("image"), "the simulator runs the worker's image")
    sim_config = sim_command[sim_command.index("--config") + 1] if "--config" in sim_command else None
    report.check(
        sim_config is not None and mounted(sim, sim_config) == ROOT / "docker" / "worker.toml",
        "the simulator accepts the accounts of docker/worker.toml (mounted, --config)",
    )
    accounts = [
        (f"{gateway}.{name}", table.get("base_url", ""))
        for gateway, tables in (config.get("accounts") or {}).items()
        for name, table in tables.items()
    ]
    port = int(listen.rsplit(":", 1)[1]) if ":" in listen else None
    wrong = [
        name
        for name, url in accounts
        if urlsplit(url).hostname != "simulator" or urlsplit(url).port != port
    ]
    report.check(
        bool(accounts) and not wrong,
        f"every account of docker/worker.toml points at the simulator (http://simulator:{port})",
        f"not: {wrong}",
    )

    sandbox = service("sandbox")
    sandbox_command = sandbox.get("command") or []
    report.check(
        sandbox.get("profiles") == ["sandbox"] and sandbox_command[:2] == ["run", "--sandbox"],
        "the sandbox (`run --sandbox`) is in the `sandbox` profile only",
        f"profiles {sandbox.get('profiles')}, command {sandbox_command}",
    )
    sandbox_db = urlsplit((sandbox.get("environment") or {}).get("DATABASE_URL") or "").path
    report.check(
        sandbox_db not in ("", database.path),
        "the sandbox has a database of its own",
        sandbox_db,
    )
    report.check(mounted(sandbox, CONFIG_TARGET) is None, "the sandbox mounts no configuration (its built-in one)")

    def seconds(text):
        match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", text or "")
        return int(match[1] or 0) * 60 + int(match[2] or 0) if match and text else None

    for name, svc in services.items():
        report.check(
            seconds(svc.get("stop_grace_period")) is not None,
            f"{name} says its stop_grace_period (an engine's default may be a kill)",
        )
    report.check(
        (seconds(worker.get("stop_grace_period")) or 0) > 25,
        "the worker's stop_grace_period exceeds its shutdown_grace (25 s)",
        worker.get("stop_grace_period"),
    )


def check_airgap(report):
    report.section("docker-compose.airgap.yml (stand-ins for RabbitMQ and PostgreSQL)")
    path = ROOT / "docker-compose.airgap.yml"
    try:
        yaml.safe_load(path.read_text())
        report.check(True, "parses as YAML")
    except yaml.YAMLError as error:
        report.check(False, "parses as YAML", str(error))
        return
    schema = run(["check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)])
    report.check(
        schema.returncode == 0,
        "valid against the Compose specification's schema",
        (schema.stdout + schema.stderr).strip(),
    )
    alone = compose_config(["docker-compose.yml"])
    merged = compose_config(["docker-compose.yml", "docker-compose.airgap.yml"])
    if not report.check(
        merged.returncode == 0 and alone.returncode == 0,
        "Docker Compose loads it over docker-compose.yml",
        (merged.stderr + alone.stderr).strip(),
    ):
        return
    official = json.loads(alone.stdout)["services"]
    services = json.loads(merged.stdout)["services"]
    report.check(set(services) == set(official), "it adds no service and removes none")
    for name in ("rabbitmq", "postgres"):
        svc, before = services.get(name) or {}, official.get(name) or {}
        image = svc.get("image", "")
        report.check(
            image != before.get("image") and not image.startswith(("rabbitmq:", "postgres:")),
            f"{name}: a stand-in under a name of its own ({image}), not the official image's",
        )
        context = Path((svc.get("build") or {}).get("context", "/nonexistent"))
        dockerfile_path = context / (svc.get("build") or {}).get("dockerfile", "Dockerfile")
        report.check(dockerfile_path.is_file(), f"{name}: built from {dockerfile_path.relative_to(ROOT)}")
        for key in ("healthcheck", "environment", "volumes", "ports", "hostname"):
            report.check(
                svc.get(key) == before.get(key),
                f"{name}: the official service's {key} is kept",
            )
        if dockerfile_path.is_file():
            check_other_dockerfile(report, dockerfile_path, base=LOCAL_DEBIAN)
    for name, svc in services.items():
        if name not in ("rabbitmq", "postgres"):
            report.check(svc == official.get(name), f"{name}: unchanged by the override")


def compose_config(files):
    args = ["docker-compose"]
    for f in files:
        args += ["-f", str(ROOT / f)]
    return run([*args, "--profile", "sandbox", "config", "--format", "json"])


def check_other_dockerfile(report, path, base):
    """A Dockerfile besides the worker's: parses, passes hadolint, starts from
    `base` (an image scripts/container-engine builds), and what it copies is
    in its context."""
    name = path.relative_to(ROOT)
    try:
        commands = dockerfile.parse_file(str(path))
    except dockerfile.GoParseError as error:
        report.check(False, f"{name}: Docker's parser reads it", str(error))
        return
    report.check(True, f"{name}: Docker's parser reads it ({len(commands)} instructions)")
    lint = run(["hadolint", str(name)])
    report.check(lint.returncode == 0, f"{name}: hadolint passes", (lint.stdout + lint.stderr).strip())
    froms = [c.value[0] for c in commands if c.cmd == "FROM"]
    args = {c.value[0].split("=")[0]: c.value[0].split("=", 1)[1] for c in commands if c.cmd == "ARG" and "=" in c.value[0]}
    froms = [args.get(f[2:-1], f) if f.startswith("${") else f for f in froms]
    report.check(froms == [base], f"{name}: FROM the local base {base}", str(froms))
    for c in commands:
        if c.cmd in ("COPY", "ADD") and not any(f.startswith("--from=") for f in c.flags):
            for source in c.value[:-1]:
                if path.name == "rust.Dockerfile":
                    continue  # its context is assembled by scripts/container-engine
                report.check((path.parent / source).exists(), f"{name}: COPY source {source} is in its context")


def check_engine_files(report):
    report.section("the engine's files")
    check_other_dockerfile(report, ROOT / "docker" / "base" / "rust.Dockerfile", base=LOCAL_DEBIAN)
    for script in ("scripts/container-engine", "scripts/container-healthchecks", "scripts/compose-smoke",
                   "docker/standins/rabbitmq/entrypoint.sh", "docker/standins/postgres/entrypoint.sh"):
        shell = "bash" if not script.endswith("entrypoint.sh") else "sh"
        syntax = run([shell, "-n", script])
        report.check(
            syntax.returncode == 0 and os.access(ROOT / script, os.X_OK),
            f"{script}: executable, `{shell} -n` passes",
            syntax.stderr.strip(),
        )
    smoke = ROOT / "scripts" / "compose_smoke.py"
    try:
        compile(smoke.read_text(), str(smoke), "exec")  # no __pycache__ left behind
        report.check(True, "scripts/compose_smoke.py compiles")
    except SyntaxError as error:
        report.check(False, "scripts/compose_smoke.py compiles", str(error))


# --- docs/asyncapi.yaml -----------------------------------------------------


def pointer(document, ref):
    node = document
    for part in ref.lstrip("#/").split("/") if ref != "#" else []:
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def refs(node, at=""):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield at, value
            else:
                yield from refs(value, f"{at}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from refs(value, f"{at}/{i}")


def check_asyncapi(report, asyncapi_schema):
    report.section("docs/asyncapi.yaml")
    path = ROOT / "docs" / "asyncapi.yaml"
    try:
        doc = yaml.safe_load(path.read_text())
        report.check(isinstance(doc, dict), "parses as YAML (PyYAML)")
    except yaml.YAMLError as error:
        report.check(False, "parses as YAML (PyYAML)", str(error))
        return
    report.check(doc.get("asyncapi") == "3.0.0", "declares asyncapi: 3.0.0", repr(doc.get("asyncapi")))

    official = json.loads(Path(asyncapi_schema).read_text())
    problems = sorted(Draft7Validator(official).iter_errors(doc), key=lambda e: list(e.path))
    report.check(
        not problems,
        "valid against the official AsyncAPI 3.0.0 JSON Schema",
        "; ".join(f"/{'/'.join(map(str, e.path))}: {e.message[:200]}" for e in problems[:5]),
    )

    payload_schemas = {}
    for at, ref in refs(doc):
        if ref.startswith("#"):
            try:
                pointer(doc, ref)
                ok = True
            except (KeyError, IndexError, ValueError):
                ok = False
            report.check(ok, f"{at}: $ref {ref} resolves")
            continue
        file = (path.parent / ref).resolve()
        try:
            schema = json.loads(file.read_text())
            Draft202012Validator.check_schema(schema)
            payload_schemas[at] = schema
            report.check(True, f"{at}: $ref {ref} is a valid 2020-12 schema")
        except (OSError, ValueError) as error:
            report.check(False, f"{at}: $ref {ref} is a valid 2020-12 schema", str(error))
        except Exception as error:  # jsonschema's SchemaError
            report.check(False, f"{at}: $ref {ref} is a valid 2020-12 schema", str(error)[:300])

    channels = doc.get("channels") or {}
    for name, channel in channels.items():
        address = channel.get("address")
        placeholders = set(re.findall(r"{([^}]+)}", address or ""))
        report.check(
            placeholders == set((channel.get("parameters") or {}).keys()),
            f"channel {name}: parameters match the address {address!r}",
        )
    expected = {
        "commands": ("backoffice.commands", "queue"),
        "deadLetters": ("backoffice.commands.dead", "queue"),
        "results": ("backoffice.events", "exchange"),
    }
    for name, (want, kind) in expected.items():
        binding = ((channels.get(name) or {}).get("bindings") or {}).get("amqp") or {}
        got = (binding.get(kind) or {}).get("name")
        report.check(got == want, f"channel {name} is the {kind} {want}", repr(got))

    for name, operation in (doc.get("operations") or {}).items():
        channel_ref = (operation.get("channel") or {}).get("$ref", "")
        for message in operation.get("messages") or []:
            report.check(
                message.get("$ref", "").startswith(channel_ref + "/messages/"),
                f"operation {name}: its messages belong to its channel",
            )

    messages = (doc.get("components") or {}).get("messages") or {}
    for name, message in messages.items():
        key = f"/components/messages/{name}/payload/schema"
        schema = payload_schemas.get(key)
        for example in message.get("examples") or []:
            if schema is None:
                report.check(False, f"message {name}: has a JSON Schema for its examples")
                continue
            errors = list(
                Draft202012Validator(schema, format_checker=FormatChecker()).iter_errors(example["payload"])
            )
            report.check(
                not errors,
                f"message {name}: example {example.get('name')} satisfies its schema",
                "; ".join(e.message for e in errors[:3]),
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asyncapi-schema", required=True)
    args = parser.parse_args()
    report = Report()
    check_dockerfile(report)
    check_compose(report)
    check_airgap(report)
    check_engine_files(report)
    check_asyncapi(report, args.asyncapi_schema)
    print(f"\ncheck-containers: {report.passed} passed, {len(report.failed)} failed")
    for what in report.failed:
        print(f"  failed: {what}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
