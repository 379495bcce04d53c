"""The deployment files hold together: docker-compose.yml's services, health checks,
dependencies, images and paths; the production Dockerfile; config/compose.toml with the
compose environment; Prometheus's scrape config; Grafana's provisioning and dashboard.
No Docker here: the files are read as Docker, Prometheus and Grafana would read them."""

from __future__ import annotations

import base64
import json
import re
import secrets
import stat
import tomllib
from typing import Any

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from service.config.base import ROOT, ConfigError
from service.config.load import load_config
from service.notify.templates import load_templates

COMPOSE = ROOT / "docker-compose.yml"
SERVICES = {"postgres", "kafka", "migrate", "api", "dispatcher", "prometheus", "grafana"}
ONE_SHOT = {"migrate"}
ENV_EXAMPLE = ROOT / "config" / "compose.env.example"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:?message}, ${VAR:-default} with env (a missing required
    variable fails the test, as it fails `docker compose up`)."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        if name in env and (env[name] or op not in (":-", ":?")):
            return env[name]
        if op in (":-", "-"):
            return arg
        raise AssertionError(f"${{{name}}} is required and unset: {arg}")

    return re.sub(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}", one, text)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_the_stack_has_every_service() -> None:
    assert set(services()) == SERVICES


def test_every_long_running_service_has_a_health_check() -> None:
    for name, service in services().items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", name
            continue
        check = service.get("healthcheck")
        assert check, f"{name}: no healthcheck"
        assert not check.get("disable"), name
        test = check["test"]
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL"), (name, test)
        assert len(test) > 1, name


def test_health_checks_probe_what_the_service_is_for() -> None:
    long_running = {n: s for n, s in services().items() if n not in ONE_SHOT}
    checks = {name: " ".join(s["healthcheck"]["test"]) for name, s in long_running.items()}
    assert "pg_isready" in checks["postgres"]
    assert "kafka-broker-api-versions" in checks["kafka"]
    assert ":8000/readyz" in checks["api"]
    port = compose_config().dispatcher.metrics_port
    assert f":{port}/metrics" in checks["dispatcher"]
    assert "/-/ready" in checks["prometheus"]
    assert "/api/health" in checks["grafana"]


def test_dependencies_wait_for_health_and_for_the_migrations() -> None:
    s = services()
    assert s["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "dispatcher"):
        depends = s[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    assert s["dispatcher"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert s["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert s["migrate"]["command"] == ["python", "-m", "service.migrate", "upgrade"]
    assert s["dispatcher"]["command"] == ["python", "-m", "dispatcher.main"]
    assert "uvicorn service.asgi:app" in s["api"]["command"]


def test_dispatchers_can_be_scaled() -> None:
    dispatcher = services()["dispatcher"]
    # A fixed name or host port would make `--scale dispatcher=3` fail on the second one.
    for key in ("container_name", "ports", "hostname"):
        assert key not in dispatcher, key
    assert "PROMETHEUS_MULTIPROC_DIR" not in environment(dispatcher)


def test_the_api_workers_share_an_empty_multiprocess_directory() -> None:
    api = services()["api"]
    directory = environment(api)["PROMETHEUS_MULTIPROC_DIR"]
    assert directory in api["tmpfs"]  # fresh, so empty, at every start
    assert "--workers" in api["command"]


def test_every_image_is_pinned_to_a_tag() -> None:
    for name, service in services().items():
        image = service.get("image")
        assert image or service.get("build"), f"{name}: neither image nor build"
        if image is None:
            continue
        repository, _, tag = image.rpartition("/")[2].partition(":")
        assert tag and tag != "latest", f"{name}: {image} is not pinned to a tag"
        assert "@" not in tag and repository, image


def test_every_build_context_and_dockerfile_exists() -> None:
    contexts = 0
    for name, service in services().items():
        build = service.get("build")
        if build is None:
            continue
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        assert context.is_dir(), f"{name}: no build context {context}"
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
        assert dockerfile and (context / dockerfile).is_file(), f"{name}: no {dockerfile}"
        for image in re.findall(r"^FROM\s+(\S+)", (context / dockerfile).read_text(), re.M):
            assert ":" in image and not image.endswith(":latest"), f"{name}: FROM {image}"
        contexts += 1
    assert contexts >= 4  # the application's three services and postgres


def test_every_bind_mounted_host_path_exists() -> None:
    named = set(compose().get("volumes") or {})
    mounts = 0
    for name, service in services().items():
        for volume in service.get("volumes") or []:
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source in named:
                continue
            assert source.startswith(("./", "../", "/")), f"{name}: {source} is no named volume"
            assert (ROOT / source).exists(), f"{name}: bind mount {source} does not exist"
            mounts += 1
    assert mounts >= 5


def test_every_secret_comes_from_the_environment_and_the_example_has_them_all() -> None:
    text = COMPOSE.read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert {"POSTGRES_PASSWORD", "JWT_SECRET", "GRAFANA_ADMIN_PASSWORD"} <= required
    example = env_example()
    assert required <= set(example)
    for name, value in example.items():
        if not value.startswith("whsec_"):
            assert "REPLACE-ME" in value, f"{name}: placeholder not marked"
    # No literal secret in the compose file: every password and secret is a variable.
    for service in services().values():
        for key, value in environment(service).items():
            if re.search(r"SECRET|PASSWORD", key, re.I):
                assert value.startswith("${"), f"{key} is set in docker-compose.yml"


def real_secrets() -> dict[str, str]:
    """An .env made from the example as its comments say: every value replaced."""
    made = {}
    for name, value in env_example().items():
        if value.startswith("whsec_"):
            made[name] = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        else:
            made[name] = secrets.token_urlsafe(32)
    return made


def compose_config(dot_env: dict[str, str] | None = None) -> Any:
    """config/compose.toml as the API and the dispatchers load it, with the environment
    docker-compose.yml gives them (from an .env of real secrets, unless given one)."""
    api = services()["api"]
    raw = environment(api)
    env = {
        k: interpolate(v, real_secrets() if dot_env is None else dot_env) for k, v in raw.items()
    }
    assert env["MARK_NOTIFY_CONFIG"].startswith("/app/config/")
    path = ROOT / "config" / env["MARK_NOTIFY_CONFIG"].removeprefix("/app/config/")
    return load_config(path, env)


def test_the_containers_config_loads_with_the_compose_environment() -> None:
    config = compose_config()
    assert config.environment == "production"
    assert config.database.url and "@postgres:5432/" in config.database.url
    assert config.kafka.bootstrap_servers == "kafka:9092"
    # Reachable by Prometheus from its own container.
    assert config.dispatcher.metrics_host == "0.0.0.0"  # noqa: S104
    assert config.identity.jwt is not None and config.identity.jwt.secret
    assert not config.identity.jwt.secret.startswith("dev-")
    assert set(load_templates(config)) == set(config.event_types)
    # Every service of the application reads the same configuration.
    envs = [environment(services()[n]) for n in ("migrate", "api", "dispatcher")]
    for key in envs[1]:
        if key != "PROMETHEUS_MULTIPROC_DIR":
            assert all(env.get(key) == envs[1][key] for env in envs), key


def test_compose_without_its_secrets_says_which_to_set() -> None:
    text = COMPOSE.read_text()
    required = re.findall(r"\$\{(\w+):\?([^}]*)\}", text)
    assert required
    for name, message in required:
        # What `docker compose up` prints when the variable is unset.
        assert message.startswith(f"set {name} (config/compose.env.example)"), name
    with pytest.raises(AssertionError, match="is required and unset: set "):
        interpolate(text, {})


# Which setting each secret of the example becomes in the API's and dispatchers' config.
SETTING_OF = {
    "MARK_NOTIFY_DB_PASSWORD": "database.url (DATABASE_URL)",
    "JWT_SECRET": "identity.jwt.secret",
    "UNSUBSCRIBE_SECRET": "notify.unsubscribe_secret",
    "DRIVER_GOALS_WEBHOOK_SECRET": "consumers.driver_goals.secret",
}


def test_the_services_refuse_the_examples_placeholders_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match="still the REPLACE-ME placeholder"):
        compose_config(env_example())
    app_variables = set(re.findall(r"\$\{(\w+)", str(environment(services()["api"]))))
    assert app_variables == set(SETTING_OF)
    for name, setting in SETTING_OF.items():
        dot_env = real_secrets() | {name: env_example()[name]}
        with pytest.raises(ConfigError) as refused:
            compose_config(dot_env)
        assert f": {setting}: still the REPLACE-ME placeholder; set a real secret" in str(
            refused.value
        ), name


def test_the_services_connect_as_a_role_that_is_no_superuser() -> None:
    postgres = services()["postgres"]
    pg_env = environment(postgres)
    raw_url = environment(services()["api"])["DATABASE_URL"]
    url = conninfo_to_dict(interpolate(raw_url, {"MARK_NOTIFY_DB_PASSWORD": "pw"}))
    role, database = url["user"], url["dbname"]
    assert role != pg_env["POSTGRES_USER"]  # the image makes POSTGRES_USER a superuser
    assert database == pg_env["POSTGRES_DB"]
    assert f"cron.database_name={database}" in postgres["command"]
    assert pg_env["MARK_NOTIFY_DB_PASSWORD"].startswith("${MARK_NOTIFY_DB_PASSWORD:?")

    # The image runs the script on an empty volume, after creating pg_cron (10-pg-cron.sql).
    context = ROOT / postgres["build"]["context"]
    script = context / "20-app-role.sh"
    assert (
        "COPY 20-app-role.sh /docker-entrypoint-initdb.d/20-app-role.sh"
        in (context / postgres["build"]["dockerfile"]).read_text()
    )
    assert script.stat().st_mode & stat.S_IXOTH, (
        "executable: the entrypoint runs it rather than sourcing it"
    )
    sql = " ".join(script.read_text().split())
    assert f"CREATE ROLE {role} LOGIN PASSWORD :'app_password';" in sql
    assert "ALTER ROLE" not in sql  # nothing makes it more than CREATE ROLE says
    assert f"ALTER DATABASE {database} OWNER TO {role};" in sql
    # The pg_cron grants docs/deployment.md and the scheduler's refusal name.
    for grant in (
        f"GRANT pg_read_all_settings TO {role};",
        f"GRANT USAGE ON SCHEMA cron TO {role};",
        "GRANT EXECUTE ON FUNCTION cron.schedule_in_database(text, text, text, text, text, "
        f"boolean) TO {role};",
    ):
        assert grant in sql, grant
    assert '-v app_password="$MARK_NOTIFY_DB_PASSWORD"' in sql


def test_the_production_image_has_no_embedded_database() -> None:
    # The instructions, without the comments (which may name what is left out).
    dockerfile = re.sub(r"^\s*#.*\n", "", (ROOT / "Dockerfile").read_text(), flags=re.M)
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert installs
    assert "embedded" not in dockerfile and "pgserver" not in dockerfile
    assert not re.search(r"pip install[^\n]*\.\[", dockerfile)  # no extras at all
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    for source in re.findall(r"^COPY\s+(?:--\S+\s+)*(\S+)\s", dockerfile, re.M):
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    ignored = (ROOT / ".dockerignore").read_text().split()
    copied = re.findall(r"^COPY\s+(\S+)", dockerfile, re.M)
    assert not set(copied) & set(ignored)

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("pgserver") for d in project["dependencies"])
    assert any(d.startswith("pgserver") for d in project["optional-dependencies"]["embedded"])


@pytest.mark.parametrize("script", ["dev", "test"])
def test_bin_dev_and_bin_test_install_the_embedded_extra(script: str) -> None:
    lines = (ROOT / "bin" / script).read_text().splitlines()
    calls = [line for line in lines if line.startswith("ensure_venv")]
    assert calls and "embedded" in calls[0]
    assert script in calls[0]


def test_prometheus_scrapes_the_api_and_every_dispatcher() -> None:
    config = yaml.safe_load((ROOT / "config/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["mark-notify-api"]["static_configs"][0]["targets"] == ["api:8000"]
    (dns,) = jobs["mark-notify-dispatcher"]["dns_sd_configs"]
    assert dns["names"] == ["dispatcher"] and dns["type"] == "A"
    assert dns["port"] == compose_config().dispatcher.metrics_port
    for rules in config["rule_files"]:
        assert (ROOT / "config/prometheus" / rules).is_file()
    prometheus = services()["prometheus"]
    assert "./config/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


def test_grafana_is_provisioned_with_the_datasource_and_the_dashboard() -> None:
    base = ROOT / "config/grafana"
    (source,) = yaml.safe_load((base / "provisioning/datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((base / "provisioning/dashboards/mark-notify.yml").read_text())[
        "providers"
    ]
    mounts = dict(v.split(":")[:2] for v in services()["grafana"]["volumes"] if v.startswith("./"))
    assert mounts["./config/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./config/grafana/dashboards"] == provider["options"]["path"]

    dashboard = json.loads((base / "dashboards/mark-notify.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
    titles = " ".join(p["title"] for p in panels).lower()
    for topic in (
        "rps",
        "/v1/seen latency",
        "seen marks per tag",
        "pending",
        "oldest pending age",
        "deliveries by consumer and outcome",
        "attempt latency",
        "dead letters",
        "breaker",
        "queue depth",
        "scheduler",
    ):
        assert topic in titles, topic


def test_every_api_server_bounds_request_heads() -> None:
    """The image, the stack and bin/dev all run uvicorn with the bounded protocol, which
    answers 431 to an oversized request head before reading it all into memory."""
    protocol = "service.http_limits:BoundedHttpToolsProtocol"
    assert protocol in (ROOT / "Dockerfile").read_text()
    assert protocol in services()["api"]["command"]
    assert protocol in (ROOT / "service" / "dev" / "server.py").read_text()


CITUS_COMPOSE = ROOT / "docker-compose.citus.yml"
RESET = object()


class ComposeLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML has no type hints
    """YAML as Compose reads it: `!reset` drops what the base file set."""


ComposeLoader.add_constructor("!reset", lambda loader, node: RESET)


def with_override(base: Any, override: Any) -> Any:
    """Compose's merge of an override file: mappings key by key, a `!reset` removes, volume
    lists by their target path, anything else replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if value is RESET:
                merged.pop(key, None)
            else:
                merged[key] = with_override(base.get(key), value) if key in base else value
        return merged
    if (
        isinstance(base, list)
        and isinstance(override, list)
        and all(isinstance(v, str) and ":" in v for v in base + override)
    ):
        by_target = {v.split(":")[1]: v for v in base} | {v.split(":")[1]: v for v in override}
        return list(by_target.values())
    return override


def citus_stack() -> dict[str, Any]:
    override = yaml.load(CITUS_COMPOSE.read_text(), Loader=ComposeLoader)  # noqa: S506
    merged: dict[str, Any] = with_override(compose(), override)
    return merged


def test_the_citus_variant_puts_a_coordinator_and_two_workers_in_place_of_postgres() -> None:
    s = citus_stack()["services"]
    assert set(s) == SERVICES | {"worker1", "worker2", "citus-nodes"}
    for name in ("postgres", "worker1", "worker2", "citus-nodes"):
        image = s[name]["image"]
        assert image.startswith("citusdata/citus:") and image.split(":")[1] != "latest", name
    assert "build" not in s["postgres"]  # Citus' image, not ours with pg_cron
    assert "citus.shard_count=16" in s["postgres"]["command"]
    assert s["postgres"]["volumes"][0].startswith("citus-coordinator:")
    for worker in ("worker1", "worker2"):
        assert "ports" not in s[worker], worker  # reached by the coordinator only
        assert "pg_isready" in " ".join(s[worker]["healthcheck"]["test"]), worker
        assert environment(s[worker])["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    # Clients reach the coordinator with passwords, as in docker-compose.yml.
    assert "POSTGRES_HOST_AUTH_METHOD" not in environment(s["postgres"])
    assert s["citus-nodes"]["restart"] == "no"
    for node in ("postgres", "worker1", "worker2"):
        assert s["citus-nodes"]["depends_on"][node]["condition"] == "service_healthy"


def test_the_citus_variant_migrates_after_the_workers_join_and_runs_in_cluster_mode() -> None:
    s = citus_stack()["services"]
    depends = s["migrate"]["depends_on"]
    assert depends["citus-nodes"]["condition"] == "service_completed_successfully"
    assert depends["postgres"]["condition"] == "service_healthy"
    for name in ("migrate", "api", "dispatcher"):
        env = environment(s[name])
        assert env["MARK_NOTIFY__database__mode"] == "citus", name
        # The base file's environment stays: the database URL and the secrets.
        assert env["DATABASE_URL"].startswith("postgresql://mark_notify:"), name
    path = ROOT / "config" / "compose.toml"
    env = {k: interpolate(v, real_secrets()) for k, v in environment(s["api"]).items()}
    assert load_config(path, env).database.mode == "citus"


def test_the_citus_variant_mounts_scripts_that_exist_and_its_secrets_are_in_the_example() -> None:
    s = citus_stack()["services"]
    mounted = [
        v.split(":")[0]
        for name in ("postgres", "worker1", "worker2", "citus-nodes")
        for v in s[name]["volumes"]
        if v.startswith("./")
    ]
    assert len(mounted) == 4
    for source in mounted:
        script = ROOT / source
        assert script.is_file() and script.stat().st_mode & stat.S_IXUSR, source
    role = (ROOT / "config" / "citus" / "10-app-role.sh").read_text()
    assert "CREATE ROLE mark_notify LOGIN" in role and "SUPERUSER" not in role
    nodes = (ROOT / "config" / "citus" / "add-nodes.sh").read_text()
    assert all(f"'{w}'" in nodes for w in ("worker1", "worker2"))
    wanted = set(re.findall(r"\$\{(\w+)", CITUS_COMPOSE.read_text()))
    assert wanted and wanted <= set(env_example())
