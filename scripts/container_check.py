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
  the worker needs (health-gated start, URLs and credentials that match).
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
        cmd is not None and cmd.json and list(cmd.value[:2]) == ["run", "--sandbox"],
        'CMD ["run", "--sandbox", ...] (exec form)',
        str(cmd.value if cmd else None),
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


def check_compose(report, sandbox):
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
    loaded = run(["docker-compose", "-f", str(path), "config", "--format", "json"])
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
        command[:2] == ["run", "--sandbox"]
        and "--admin-listen" in command
        and command[command.index("--admin-listen") + 1] == "0.0.0.0:9090",
        "the worker runs `run --sandbox --admin-listen 0.0.0.0:9090`",
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

    # The configuration baked into the image names the same places.
    config = tomllib.loads(sandbox.read_text())
    report.check(
        urlsplit(config["amqp"]["url"]).hostname == "rabbitmq"
        and urlsplit(config["database"]["url"]).hostname == "postgres",
        f"{sandbox.relative_to(ROOT)} points at the compose services",
    )


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
    check_compose(report, ROOT / "docker" / "sandbox.toml")
    check_asyncapi(report, args.asyncapi_schema)
    print(f"\ncheck-containers: {report.passed} passed, {len(report.failed)} failed")
    for what in report.failed:
        print(f"  failed: {what}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
