"""docker-compose.yml, Dockerfile and .dockerignore, checked by parsing them (no Docker engine here).

Every property asserted is one that would break `docker compose up` or the service in its
container: names the app does not read, a healthcheck on a route that does not exist, a
database URL pointing nowhere, a root user, a dependency the image would not install.
"""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
import importlib.metadata
import json
import re
import shlex
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from app.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SETTING_NAMES = {f.name.upper() for f in dataclasses.fields(Settings)}
# What a user must supply for `docker compose up`; everything else has a default.
USER_ENV = {"INGEST_TOKENS": "ingest-a,ingest-b", "READ_TOKENS": "read-a"}


# --------------------------------------------------------------------------- helpers

_VAR = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


class MissingVariable(Exception):
    pass


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: $$, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        present = name in env
        empty = present and env[name] == ""
        if op in (":-", "-"):
            use_default = not present or (op == ":-" and empty)
            return arg if use_default else env[name]
        if op in (":?", "?"):
            if not present or (op == ":?" and empty):
                raise MissingVariable(f"{name}: {arg}")
            return env[name]
        return env.get(name, "")

    return _VAR.sub(sub, value)


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def service_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def resolved_env(service: dict, user_env: dict[str, str]) -> dict[str, str]:
    return {k: interpolate(v, user_env) for k, v in service_env(service).items()}


def volumes(service: dict) -> dict[str, tuple[str, str]]:
    """container path -> (host path, mode) for bind mounts written in short syntax."""
    out = {}
    for spec in service.get("volumes") or []:
        parts = spec.split(":")
        host, container = parts[0], parts[1]
        out[container] = (host, parts[2] if len(parts) > 2 else "rw")
    return out


def healthcheck_argv(service: dict) -> list[str]:
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return ["CMD-SHELL", test]
    return list(test)


@dataclasses.dataclass
class Instruction:
    keyword: str
    args: str


def dockerfile() -> list[Instruction]:
    lines: list[Instruction] = []
    buffer = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, args = buffer.partition(" ")
        lines.append(Instruction(keyword.upper(), args.strip()))
        buffer = ""
    assert not buffer, "a Dockerfile line ends with a continuation"
    return lines


def dockerfile_env(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ENV":
            for token in shlex.split(ins.args):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def app_routes() -> dict[str, tuple[str, set[str]]]:
    """path -> (Route|WebSocketRoute, methods) for every route literal in app/."""
    routes: dict[str, tuple[str, set[str]]] = {}
    for path in (ROOT / "app").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            first = node.args[0]
            if func not in ("Route", "WebSocketRoute") or not isinstance(first, ast.Constant):
                continue
            methods = {"GET", "HEAD"} if func == "Route" else set()
            for kw in node.keywords:
                if kw.arg == "methods" and isinstance(kw.value, ast.List | ast.Tuple):
                    methods = {e.value for e in kw.value.elts if isinstance(e, ast.Constant)}
            routes[first.value] = (func, methods)
    return routes


def requirement_lines(name: str) -> list[str]:
    return [line.strip() for line in (ROOT / name).read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]


def runtime_requirements() -> list[str]:
    """What the Dockerfile installs: requirements.txt without pgserver."""
    return [line for line in requirement_lines("requirements.txt") if not re.match(r"^pgserver", line)]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def closure(requirements: list[str]) -> set[str]:
    """Every distribution pip installs for these requirements (markers other than extras ignored)."""
    seen: set[str] = set()
    todo = []
    for req in requirements:
        m = _REQ.match(req)
        assert m, req
        todo.append((m.group(1), {e.strip() for e in (m.group(2) or "").split(",") if e.strip()}))
    while todo:
        name, extras = todo.pop()
        key = canonical(name)
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            spec, _, marker = line.partition(";")
            wanted = set(re.findall(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker))
            if wanted and not wanted & extras:
                continue
            m = _REQ.match(spec)
            if m:
                todo.append((m.group(1), {e.strip() for e in (m.group(2) or "").split(",") if e.strip()}))
    return seen


def third_party_imports() -> dict[str, list[tuple[Path, bool]]]:
    """top-level module -> [(file, imported at module level?)] for app/ imports outside the stdlib."""
    found: dict[str, list[tuple[Path, bool]]] = {}
    for path in (ROOT / "app").rglob("*.py"):
        tree = ast.parse(path.read_text())
        in_function: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                in_function.update(id(n) for n in ast.walk(node) if n is not node)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "app":
                    continue
                found.setdefault(top, []).append((path, id(node) not in in_function))
    return found


# --------------------------------------------------------------------------- the helpers


def test_interpolation_helper_follows_compose_rules() -> None:
    assert interpolate("${A:-x}", {}) == "x"
    assert interpolate("${A:-x}", {"A": ""}) == "x"
    assert interpolate("${A-x}", {"A": ""}) == ""
    assert interpolate("a$${B}", {}) == "a${B}"
    with pytest.raises(MissingVariable):
        interpolate("${A:?set A}", {"A": ""})


def test_route_and_import_scanners_see_real_things() -> None:
    assert "/healthcheck" in app_routes()
    assert "starlette" in third_party_imports()


# --------------------------------------------------------------------------- compose: database


def test_compose_has_the_database_and_the_app() -> None:
    services = compose()["services"]
    assert set(services) == {"db", "app"}


def test_database_is_official_postgres_with_data_in_postgres_data() -> None:
    db = compose()["services"]["db"]
    image, _, tag = db["image"].partition(":")
    assert image == "postgres", "the official image"
    assert tag and int(tag.split(".")[0].split("-")[0]) >= 15, "PostgreSQL 15+ with a pinned major version"
    env = resolved_env(db, {})
    data_dir = env.get("PGDATA", "/var/lib/postgresql/data")
    mounts = volumes(db)
    host, mode = next((h, m) for c, (h, m) in mounts.items() if data_dir == c or data_dir.startswith(c + "/"))
    assert (ROOT / host).resolve() == ROOT / "postgres-data" and mode == "rw"
    assert "postgres-data/" in (ROOT / ".gitignore").read_text().split()


def test_database_runs_schema_as_init_scripts() -> None:
    db = compose()["services"]["db"]
    host, mode = volumes(db)["/docker-entrypoint-initdb.d"]
    assert (ROOT / host).resolve() == ROOT / "schema" and mode == "ro"
    scripts = sorted(p.name for p in (ROOT / "schema").iterdir())
    assert scripts and all(re.fullmatch(r"[0-9]{3}_[a-z0-9_]+\.sql", s) for s in scripts), scripts


def test_database_healthcheck_waits_for_the_real_server_over_tcp() -> None:
    db = compose()["services"]["db"]
    env = resolved_env(db, {})
    argv = healthcheck_argv(db)
    assert argv[0] == "CMD" and argv[1] == "pg_isready"
    opts = dict(zip(argv[2::2], argv[3::2], strict=True))
    # The init-time server listens on the Unix socket only: a TCP probe stays red until init is over.
    assert opts["-h"] in ("127.0.0.1", "localhost")
    assert opts["-U"] == env["POSTGRES_USER"] and opts["-d"] == env["POSTGRES_DB"]
    assert "ports" not in db, "the database is not published on the host"


# --------------------------------------------------------------------------- compose: app


def test_app_is_built_here_and_waits_for_a_healthy_database() -> None:
    app = compose()["services"]["app"]
    build = app["build"] if isinstance(app["build"], str) else app["build"]["context"]
    assert (ROOT / build).resolve() == ROOT and DOCKERFILE.exists()
    assert app["depends_on"]["db"]["condition"] == "service_healthy"


def test_app_environment_names_are_settings_the_app_reads() -> None:
    env = service_env(compose()["services"]["app"])
    assert set(env) <= SETTING_NAMES, f"not settings of app/config.py: {set(env) - SETTING_NAMES}"
    assert {"DATABASE_URL", "HOST", "INGEST_TOKENS", "READ_TOKENS"} <= set(env)


def test_app_refuses_to_come_up_without_tokens() -> None:
    app = compose()["services"]["app"]
    for name in ("INGEST_TOKENS", "READ_TOKENS"):
        with pytest.raises(MissingVariable):
            resolved_env(app, {k: v for k, v in USER_ENV.items() if k != name})
        assert re.fullmatch(r"\$\{" + name + r":\?[^}]+\}", service_env(app)[name]), "required, with a message"


def test_app_settings_load_and_pass_the_exposure_check() -> None:
    from app.__main__ import check_exposure

    env = resolved_env(compose()["services"]["app"], USER_ENV)
    settings = load_settings([], env)
    assert settings.host == "0.0.0.0"
    assert settings.ingest_tokens == ("ingest-a", "ingest-b") and settings.read_tokens == ("read-a",)
    assert settings.workers >= 1
    assert settings.log_format in ("text", "json")
    assert check_exposure(settings) is None
    # The same bind without tokens is refused: the compose file cannot drop them.
    assert check_exposure(load_settings([], {**env, "INGEST_TOKENS": "", "READ_TOKENS": ""})) is not None


def test_database_url_points_at_the_db_service_with_its_credentials() -> None:
    services = compose()["services"]
    db_env = resolved_env(services["db"], {"POSTGRES_PASSWORD": "p@ss"})
    url = urlsplit(resolved_env(services["app"], {**USER_ENV, "POSTGRES_PASSWORD": "p@ss"})["DATABASE_URL"])
    assert url.scheme in ("postgresql", "postgres")
    assert url.hostname == "db" and url.hostname in services
    assert (url.port or 5432) == int(db_env.get("PGPORT", "5432"))
    assert url.username == db_env["POSTGRES_USER"]
    assert url.path.lstrip("/") == db_env["POSTGRES_DB"]
    assert url.password == db_env["POSTGRES_PASSWORD"], "one password variable for both services"


def test_app_port_and_healthcheck_match_the_app() -> None:
    app = compose()["services"]["app"]
    settings = load_settings([], resolved_env(app, USER_ENV))
    published = [interpolate(str(p), {}) for p in app["ports"]]
    assert [p.rsplit(":", 1)[1] for p in published] == [str(settings.port)]
    assert published[0].rsplit(":", 1)[0].split(":")[-1] == "8000", "published on 8000 by default"

    argv = healthcheck_argv(app)
    assert argv[0] == "CMD" and argv[1] == "python", "slim images have no curl: probe with python"
    url = re.search(r"https?://[^'\" ]+", " ".join(argv)).group(0)
    parts = urlsplit(url)
    assert parts.hostname in ("127.0.0.1", "localhost") and parts.port == settings.port
    kind, methods = app_routes()[parts.path]
    assert parts.path == "/healthcheck" and kind == "Route" and "GET" in methods


def test_app_stops_gracefully() -> None:
    app = compose()["services"]["app"]
    assert app.get("init") is True, "an init process forwards SIGTERM and reaps workers"
    grace = re.fullmatch(r"(\d+)s", app["stop_grace_period"])
    assert grace and int(grace.group(1)) > Settings.graceful_timeout_seconds


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_base_image_is_python_311_slim() -> None:
    first = dockerfile()[0]
    assert first.keyword == "FROM" and re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", first.args)


def test_dockerfile_runs_python_m_app_in_exec_form() -> None:
    cmds = [i for i in dockerfile() if i.keyword == "CMD"]
    assert len(cmds) == 1 and json.loads(cmds[0].args) == ["python", "-m", "app"]
    assert not [i for i in dockerfile() if i.keyword == "ENTRYPOINT"]


def test_dockerfile_runs_as_a_non_root_user_it_creates() -> None:
    instructions = dockerfile()
    users = [(n, i) for n, i in enumerate(instructions) if i.keyword == "USER"]
    assert users, "no USER: the container would run as root"
    position, last = users[-1]
    user = last.args.split(":")[0]
    assert user not in ("root", "0")
    creates = [i.args for i in instructions[:position] if i.keyword == "RUN" and "useradd" in i.args]
    assert creates and (f"--uid {user}" in creates[0] or creates[0].rstrip().endswith(user))
    cmd_at = next(n for n, i in enumerate(instructions) if i.keyword == "CMD")
    assert position < cmd_at
    installs = [n for n, i in enumerate(instructions) if i.keyword == "RUN" and "pip install" in i.args]
    assert installs and max(installs) < position, "install as root, run as the user"


def test_dockerfile_copies_app_schema_and_requirements_where_the_app_looks() -> None:
    instructions = dockerfile()
    workdir = next(i.args for i in instructions if i.keyword == "WORKDIR")
    copies = {}
    for ins in instructions:
        if ins.keyword == "COPY":
            *sources, dest = ins.args.split()
            for source in sources:
                copies[source.rstrip("/")] = dest
    assert {"requirements.txt", "app", "schema"} <= set(copies)
    # app/store/db.py reads migrations from the package's parent: <workdir>/schema next to <workdir>/app.
    assert copies["app"].rstrip("/") in ("./app", f"{workdir}/app")
    assert copies["schema"].rstrip("/") in ("./schema", f"{workdir}/schema")
    db_module = (ROOT / "app" / "store" / "db.py").read_text()
    assert "parents[2]" in db_module and '"schema"' in db_module


def test_dockerfile_binds_all_interfaces_and_exposes_the_port() -> None:
    instructions = dockerfile()
    env = dockerfile_env(instructions)
    settings_env = {k: v for k, v in env.items() if not k.startswith(("PYTHON", "PIP_"))}
    assert set(settings_env) <= SETTING_NAMES, set(settings_env) - SETTING_NAMES
    settings = load_settings([], {**settings_env, **USER_ENV})
    assert settings.host == "0.0.0.0"
    exposed = [i.args for i in instructions if i.keyword == "EXPOSE"]
    assert exposed == [str(settings.port)]


def test_dockerfile_healthcheck_probes_healthcheck_with_python() -> None:
    instructions = dockerfile()
    checks = [i.args for i in instructions if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    argv = json.loads(checks[0].split("CMD", 1)[1].strip())
    assert argv[0] == "python" and "/healthcheck" in argv[-1]
    assert "/healthcheck" in app_routes()
    text = DOCKERFILE.read_text()
    assert "curl" not in text.replace("no curl", "") and "wget" not in text


def test_image_installs_runtime_requirements_only_and_they_cover_the_app() -> None:
    text = DOCKERFILE.read_text()
    assert "grep -v '^pgserver' requirements.txt" in text
    assert "requirements-dev" not in text.replace("requirements-dev.txt, which the image never sees", "")
    runtime = {canonical(_REQ.match(r).group(1)) for r in runtime_requirements()}
    assert {"starlette", "sse-starlette", "asyncpg", "uvicorn", "orjson", "prometheus-client"} <= runtime
    assert not runtime & {"pytest", "ruff", "hypothesis", "pgserver", "playwright", "aiohttp", "mypy"}

    installed = closure(runtime_requirements())
    distributions = importlib.metadata.packages_distributions()
    for module, uses in third_party_imports().items():
        if module == "pgserver":
            # Left out of the image: only the embedded mode (no DATABASE_URL) may import it, lazily.
            assert not [str(p) for p, top_level in uses if top_level], "pgserver imported at module level"
            continue
        dists = {canonical(d) for d in distributions.get(module, [module])}
        assert dists & installed, f"app/ imports {module} but the image would not install it"


def test_requirements_split_runtime_from_development() -> None:
    runtime = {canonical(_REQ.match(r).group(1)) for r in requirement_lines("requirements.txt")}
    # Packages of this repository (the Python uploader) are installed from their folder, not pinned.
    local = [line for line in requirement_lines("requirements-dev.txt") if line.startswith("-e ./")]
    assert local == ["-e ./clients/python"]
    dev_lines = [line for line in requirement_lines("requirements-dev.txt") if line not in local]
    assert dev_lines[0] == "-r requirements.txt", "the dev file starts from the runtime one"
    dev = {canonical(_REQ.match(r).group(1)) for r in dev_lines[1:]}
    assert not runtime & dev, "each package pinned once"
    assert {"pytest", "ruff", "mypy", "aiohttp", "playwright", "hypothesis"} <= dev
    assert not runtime & {"pytest", "ruff", "mypy", "aiohttp", "playwright", "hypothesis", "schemathesis", "pyyaml"}
    assert all("==" in line for line in [*requirement_lines("requirements.txt"), *dev_lines[1:]]), "pinned"
    # The service's command installs the runtime only; the test command both; CI runs the test command.
    assert "REQUIREMENTS=requirements.txt" in (ROOT / "bin" / "serve").read_text()
    assert "REQUIREMENTS=requirements-dev.txt" in (ROOT / "bin" / "test").read_text()
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == "exec ./bin/test"


def test_dockerignore_keeps_database_files_and_secrets_out_but_not_the_app() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith("!")
    ]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in patterns)

    for path in ("postgres-data", "postgres-data/base/1", ".git", ".env", ".venv"):
        assert ignored(path), path
    for path in ("requirements.txt", "app", "app/__main__.py", "app/static/index.html", "schema", "schema/001_init.sql"):
        assert not ignored(path), path


def test_deploy_doc_covers_what_an_operator_sets() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    for needle in ("docker compose up", "INGEST_TOKENS", "READ_TOKENS", "POSTGRES_PASSWORD", "WORKERS", "postgres-data", "k6"):
        assert needle in text, needle
