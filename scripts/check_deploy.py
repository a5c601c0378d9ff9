#!/usr/bin/env python3
"""Static checks of the deployment files (no Docker engine or Kubernetes cluster needed).

Checks, from the repository root:
  * every YAML (multi-document) and JSON file under deploy/, plus docker-compose.kafka.yml, parses;
  * every TOML file under deploy/, and the TOML held by the k8s ConfigMap, parses and uses only
    the config sections and keys that `streamcast run` accepts;
  * the paths deploy/Dockerfile COPYs exist and are not excluded by .dockerignore;
  * the compose file's worker and topics services build deploy/Dockerfile, workers wait for topic
    creation, and bind-mounted files exist;
  * the k8s Deployment probes /healthz (liveness) and /readyz (readiness) on the HTTP port, and
    its grace period exceeds processing.shutdown_timeout; the KEDA ScaledObject matches the
    consumer group, topic and partition count; kustomization.yaml lists every manifest;
  * the Grafana dashboard queries only metrics the worker exports.
  * docker-compose.kafka.yml validates against the Compose Specification's JSON schema
    (scripts/compose-spec.json, from github.com/compose-spec/compose-spec at 170098ba, Apache-2.0:
    what `docker compose config` checks first), every profile included;
  * one-shot topic services reach a healthy Kafka service through their depends_on chain.
Optional, skipped when the tool is missing: `kubectl kustomize deploy/k8s` (needs no cluster),
offline schema validation with the `kubernetes-validate` package, and `docker compose config -q`
(needs the compose plugin, not a Docker engine).

Exit status 0 and "deploy check: N files ok" on success; 1 with one line per problem otherwise.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        sys.exit("deploy check: needs Python 3.11+ (tomllib) or the tomli package")

try:
    import yaml
except ModuleNotFoundError:
    sys.exit("deploy check: needs PyYAML (pip install -r scripts/requirements-test.txt)")

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = ROOT / "docker-compose.kafka.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = DEPLOY / "k8s"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"

# The config sections and keys `streamcast run` accepts (src/config.rs denies unknown keys).
# [kafka] is passed to librdkafka verbatim, so any key is allowed there.
CONFIG_KEYS: dict[str, set[str] | None] = {
    "kafka": None,
    "consumer": {"group_id", "max_in_flight", "auto_offset_reset"},
    "topics": {"input", "predictions", "actuals", "dlq", "metrics", "alerts", "shadow"},
    "variants": {"candidate", "shadow"},
    "model": {"root", "cache_dir", "name", "version", "execution_provider", "intra_threads", "watch_interval"},
    "batching": {"max_batch_size", "max_wait_ms"},
    "validation": {"max_message_bytes", "reject_unknown_features"},
    "windows": {"max_series", "rebuild_max_records", "rebuild_timeout", "duplicates", "gaps", "max_fill_steps"},
    "cache": {"enabled", "max_entries"},
    "processing": {"guarantee", "shutdown_timeout", "passthrough"},
    "monitor": {
        "enabled", "join_by", "actuals_from_input", "mase_season", "join_ttl", "max_pending", "window_count", "window_duration", "publish_interval",
        "rmse_threshold", "rmse_threshold_ratio", "min_joined", "drift_sample_size", "drift_min_samples",
        "drift_alpha", "drift_ks_threshold", "drift_psi_threshold", "drift_bins", "retrain_after",
        "retrain_schedule", "alert_cooldown",
    },
    "intervals": {"enabled", "level", "method", "aci_gamma", "min_residuals", "coverage_window", "coverage_band"},
    "http": {"listen", "max_body_bytes"},
    "telemetry": {"log_format", "log_level"},
}
RESERVED_KAFKA_KEYS = {"group.id", "enable.auto.offset.store", "enable.auto.commit"}
DEFAULT_SHUTDOWN_S = 30.0
DEFAULT_GROUP = "streamcast"
DEFAULT_INPUT_TOPIC = "input_data"

# Prometheus metrics the worker exports (histograms also as _bucket, _sum, _count).
KNOWN_METRICS = {
    "streamcast_cache_hits_total",
    "streamcast_cache_misses_total",
    "streamcast_model_reloads_total",
    "streamcast_execution_provider_fallback",
    "streamcast_consumer_lag_messages",
    "streamcast_consumer_lag_seconds",
    "streamcast_producer_queue_messages",
    "streamcast_monitor_rmse",
    "streamcast_monitor_errors_total",
    "streamcast_monitor_squared_error_total",
    "streamcast_monitor_absolute_error_total",
    "streamcast_monitor_rejected_total",
    "streamcast_monitor_leader",
    "streamcast_monitor_lag_messages",
    "streamcast_monitor_lag_seconds",
    "streamcast_monitor_mae",
    "streamcast_monitor_joined",
    "streamcast_monitor_pending",
    "streamcast_monitor_expired",
    "streamcast_monitor_unmatched_actuals",
    "streamcast_monitor_drift_ks_statistic",
    "streamcast_monitor_drift_psi",
    "streamcast_monitor_drift_p_value",
    "streamcast_events_consumed_total",
    "streamcast_events_acknowledged_total",
    "streamcast_predictions_total",
    "streamcast_events_rejected_total",
    "streamcast_extra_features_total",
    "streamcast_delivery_failures_total",
    "streamcast_end_to_end_latency_seconds",
    "streamcast_inference_duration_seconds",
    "streamcast_batch_size",
    "streamcast_in_flight_events",
    "streamcast_unscored_events",
    "streamcast_series_windows",
    "streamcast_series_evicted_total",
    "streamcast_execution_provider",
    "streamcast_in_flight_batches",
    "streamcast_fallback_active",
    "streamcast_fallback_predictions_total",
    "streamcast_breaker_transitions_total",
    "streamcast_variant_decisions_total",
}

errors: list[str] = []
notes: list[str] = []


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def fail(where: str, message: str) -> None:
    errors.append(f"{where}: {message}")


# --------------------------------------------------------------------------------------------
# Parsing


_yaml_cache: dict[Path, list] = {}


def load_yaml(path: Path) -> list:
    """All non-empty documents of a YAML file (parsed once; a parse error is reported once)."""
    if path not in _yaml_cache:
        _yaml_cache[path] = _load_yaml(path)
    return _yaml_cache[path]


def _load_yaml(path: Path) -> list:
    try:
        with path.open(encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as e:
        fail(rel(path), f"invalid YAML: {e}")
        return []
    if not docs:
        fail(rel(path), "holds no YAML document")
    return docs


def load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        fail(rel(path), f"invalid JSON: {e}")
        return None


def parse_duration(text: str) -> float | None:
    """A humantime duration such as "30s", "1m 30s" or "500ms", in seconds."""
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+)\s*([a-z]+)", text.strip())
    if not parts or re.sub(r"\s|\d+\s*[a-z]+", "", text.strip()):
        return None
    total = 0.0
    for number, unit in parts:
        if unit not in units:
            return None
        total += int(number) * units[unit]
    return total


def duration_seconds(value) -> float | None:
    """A compose/k8s duration ("45s", "1m30s") or a number of seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return parse_duration(value)
    return None


def check_streamcast_config(where: str, text: str) -> dict | None:
    """Parses a streamcast TOML config and checks its sections, keys and enum values."""
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        fail(where, f"invalid TOML: {e}")
        return None
    for section, value in config.items():
        if section not in CONFIG_KEYS:
            fail(where, f"unknown section [{section}] (allowed: {', '.join(CONFIG_KEYS)})")
            continue
        if not isinstance(value, dict):
            fail(where, f"`{section}` must be a table")
            continue
        allowed = CONFIG_KEYS[section]
        for key in value:
            if allowed is not None and key not in allowed:
                fail(where, f"unknown key {section}.{key} (allowed: {', '.join(sorted(allowed))})")
    kafka = config.get("kafka", {})
    if "bootstrap.servers" not in kafka:
        fail(where, 'kafka."bootstrap.servers" is missing')
    for key in RESERVED_KAFKA_KEYS & set(kafka):
        fail(where, f'kafka."{key}" is managed by streamcast')
    model = config.get("model", {})
    if not model.get("name"):
        fail(where, "model.name is missing")
    enums = {
        ("model", "execution_provider"): {"auto", "cpu", "cuda"},
        ("telemetry", "log_format"): {"json", "text"},
        ("processing", "guarantee"): {"at_least_once"},
        ("consumer", "auto_offset_reset"): {"earliest", "latest"},
    }
    for (section, key), allowed_values in enums.items():
        value = config.get(section, {}).get(key)
        if value is not None and value not in allowed_values:
            fail(where, f"{section}.{key} = {value!r}: expected one of {sorted(allowed_values)}")
    timeout = config.get("processing", {}).get("shutdown_timeout")
    if timeout is not None and (not isinstance(timeout, str) or parse_duration(timeout) is None):
        fail(where, f"processing.shutdown_timeout = {timeout!r} is not a duration such as \"30s\"")
    listen = config.get("http", {}).get("listen")
    if listen is not None and listen != "" and not re.fullmatch(r"(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):\d{1,5}", listen):
        fail(where, f"http.listen = {listen!r} must be an IP:port such as 0.0.0.0:9464")
    return config


def shutdown_seconds(config: dict | None) -> float:
    value = (config or {}).get("processing", {}).get("shutdown_timeout")
    return (parse_duration(value) if isinstance(value, str) else None) or DEFAULT_SHUTDOWN_S


# --------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore


def dockerfile_instructions(path: Path) -> list[tuple[int, str, str]]:
    """(line number, INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[int, str, str]] = []
    buf, start = "", 0
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((start, word.upper(), rest.strip()))
        buf = ""
    return out


def dockerignore_patterns() -> list[str]:
    if not DOCKERIGNORE.is_file():
        fail(rel(DOCKERIGNORE), "missing (the build context would include target/ and .venv/)")
        return []
    patterns = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and not line.startswith("!"):
            patterns.append(line.strip("/").removeprefix("**/"))
    for required in ("target", ".venv", ".git"):
        if required not in patterns:
            fail(rel(DOCKERIGNORE), f"should exclude {required}")
    return patterns


def ignored(path: str, patterns: list[str]) -> str | None:
    parts = Path(path).parts
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        for pattern in patterns:
            if fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(parts[i - 1], pattern):
                return pattern
    return None


def check_dockerfile() -> None:
    where = rel(DOCKERFILE)
    if not DOCKERFILE.is_file():
        fail(where, "missing")
        return
    patterns = dockerignore_patterns()
    instructions = dockerfile_instructions(DOCKERFILE)
    stages = [args for _, word, args in instructions if word == "FROM"]
    if len(stages) < 2:
        fail(where, "expected a multi-stage build (builder and runtime)")
    saw_user = saw_expose = saw_ort_path = saw_ort_arg = False
    entrypoint = ""
    for line, word, args in instructions:
        if word in ("COPY", "ADD"):
            try:
                tokens = json.loads(args) if args.startswith("[") else shlex.split(args)
            except (ValueError, json.JSONDecodeError) as e:
                fail(f"{where}:{line}", f"cannot parse {word}: {e}")
                continue
            flags = [t for t in tokens if t.startswith("--")]
            paths = [t for t in tokens if not t.startswith("--")]
            if any(f.startswith("--from=") for f in flags):
                continue
            if len(paths) < 2:
                fail(f"{where}:{line}", f"{word} needs a source and a destination")
                continue
            for source in paths[:-1]:
                if "://" in source:
                    continue
                matches = list(ROOT.glob(source)) if any(c in source for c in "*?[") else [ROOT / source]
                if not any(m.exists() for m in matches):
                    fail(f"{where}:{line}", f"{word} source `{source}` does not exist in the repository")
                    continue
                pattern = ignored(source, patterns)
                if pattern:
                    fail(f"{where}:{line}", f"{word} source `{source}` is excluded by .dockerignore (`{pattern}`)")
        elif word == "USER":
            saw_user = args.split(":")[0] not in ("root", "0")
        elif word == "EXPOSE":
            saw_expose = saw_expose or "9464" in args.split()
        elif word == "ENV" and "ORT_DYLIB_PATH" in args:
            saw_ort_path = "libonnxruntime.so" in args
        elif word == "ARG" and args.startswith("ORT_PACKAGE"):
            saw_ort_arg = True
        elif word == "ENTRYPOINT":
            entrypoint = args
    if not saw_user:
        fail(where, "the runtime stage must end with a non-root USER")
    if not saw_expose:
        fail(where, "should EXPOSE 9464 (the HTTP port)")
    if not saw_ort_path:
        fail(where, "should set ORT_DYLIB_PATH to the onnxruntime wheel's libonnxruntime.so")
    if not saw_ort_arg:
        fail(where, "should take ARG ORT_PACKAGE (onnxruntime or onnxruntime-gpu[cuda,cudnn])")
    if "streamcast" not in entrypoint:
        fail(where, "ENTRYPOINT should run streamcast")


# --------------------------------------------------------------------------------------------
# docker compose


def builds_dockerfile(service: dict) -> bool:
    build = service.get("build")
    if not isinstance(build, dict):
        return False
    context = ROOT / str(build.get("context", "."))
    dockerfile = context / str(build.get("dockerfile", "Dockerfile"))
    return dockerfile.resolve() == DOCKERFILE.resolve()


def command_words(service: dict) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def waits_for_healthy_kafka(services: dict, name: str, seen: frozenset = frozenset()) -> bool:
    """Whether `name`'s depends_on chain (conditions service_healthy or
    service_completed_successfully) reaches a `kafka*` service with service_healthy."""
    deps = services.get(name, {}).get("depends_on", {})
    if not isinstance(deps, dict) or name in seen:
        return False
    for dep, spec in deps.items():
        condition = (spec or {}).get("condition")
        if dep.startswith("kafka") and condition == "service_healthy" and "healthcheck" in services.get(dep, {}):
            return True
        if condition in ("service_healthy", "service_completed_successfully") and waits_for_healthy_kafka(
            services, dep, seen | {name}
        ):
            return True
    return False


def check_compose_schema(compose: dict) -> None:
    """The Compose Specification's JSON schema, as `docker compose config` applies it."""
    try:
        import jsonschema
    except ModuleNotFoundError:
        fail(rel(COMPOSE), "needs the jsonschema package (pip install -r scripts/requirements-test.txt)")
        return
    schema = json.loads((ROOT / "scripts" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    for error in sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path)):
        at = "/".join(str(p) for p in error.absolute_path) or "(top)"
        fail(rel(COMPOSE), f"Compose Specification: {at}: {error.message}")


def check_compose(docker_config: dict | None) -> int:
    """Returns the partition count the topics service creates (6 if not found)."""
    where = rel(COMPOSE)
    partitions = 6
    if not COMPOSE.is_file():
        fail(where, "missing")
        return partitions
    docs = load_yaml(COMPOSE)
    if not docs:
        return partitions
    compose = docs[0]
    services = compose.get("services") if isinstance(compose, dict) else None
    if not isinstance(services, dict) or not services:
        fail(where, "has no services")
        return partitions
    check_compose_schema(compose)

    kafka = services.get("kafka")
    if not isinstance(kafka, dict) or "healthcheck" not in kafka:
        fail(where, "needs a `kafka` service with a healthcheck")

    topics = [n for n, s in services.items() if command_words(s)[:2] == ["topics", "create"]]
    workers = [n for n, s in services.items() if command_words(s)[:1] == ["run"] or n.startswith("worker")]
    if not topics:
        fail(where, "no one-shot service runs `streamcast topics create`")
    if not workers:
        fail(where, "no worker service (command `run ...` or a name starting with `worker`)")
    for name in topics + workers:
        if not builds_dockerfile(services[name]):
            fail(where, f"service `{name}` must build {rel(DOCKERFILE)} (build.context . and build.dockerfile)")
    for name in topics:
        words = command_words(services[name])
        if "--partitions" in words[:-1]:
            try:
                partitions = int(words[words.index("--partitions") + 1])
            except ValueError:
                fail(where, f"service `{name}`: --partitions is not a number")
        if not waits_for_healthy_kafka(services, name):
            fail(where, f"service `{name}` should wait for a kafka service: service_healthy")
    shutdown = shutdown_seconds(docker_config)
    replicas = 0
    for name in workers:
        service = services[name]
        deps = service.get("depends_on", {})
        if topics and not (
            isinstance(deps, dict)
            and any(deps.get(t, {}).get("condition") == "service_completed_successfully" for t in topics)
        ):
            fail(where, f"worker `{name}` should depend on {topics[0]}: service_completed_successfully")
        grace = duration_seconds(service.get("stop_grace_period", "10s"))
        if grace is None or grace <= shutdown:
            fail(where, f"worker `{name}`: stop_grace_period must exceed processing.shutdown_timeout ({shutdown:g}s)")
        replicas += int((service.get("deploy") or {}).get("replicas", 1))
    if workers and replicas > partitions:
        fail(where, f"{replicas} worker replicas but only {partitions} partitions: the extra ones would idle")

    for name, service in services.items():
        for volume in service.get("volumes", []) or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith(("./", "../", "/")) and not (ROOT / source).exists():
                fail(where, f"service `{name}` mounts `{source}`, which does not exist")
    for name in ("prometheus", "grafana"):
        if name in services and "monitoring" not in (services[name].get("profiles") or []):
            fail(where, f"service `{name}` should be in the `monitoring` profile")
    return partitions


# --------------------------------------------------------------------------------------------
# Kubernetes


def check_k8s(partitions: int) -> list[tuple[Path, dict]]:
    manifests: list[tuple[Path, dict]] = []
    for path in sorted(K8S.glob("*.y*ml")):
        for doc in load_yaml(path):
            if isinstance(doc, dict):
                manifests.append((path, doc))
            else:
                fail(rel(path), "a document is not a mapping")
    by_kind: dict[str, list[tuple[Path, dict]]] = {}
    for path, doc in manifests:
        by_kind.setdefault(str(doc.get("kind")), []).append((path, doc))

    # kustomization.yaml lists every manifest, and every listed file exists.
    kustomizations = by_kind.get("Kustomization", [])
    if not kustomizations:
        fail(rel(K8S), "no kustomization.yaml")
    else:
        path, kust = kustomizations[0]
        resources = [str(r) for r in kust.get("resources", [])]
        for resource in resources:
            if not (K8S / resource).exists():
                fail(rel(path), f"lists `{resource}`, which does not exist")
        for manifest in sorted({p for p, d in manifests if d.get("kind") != "Kustomization"}):
            if manifest.name not in resources:
                fail(rel(path), f"does not list {manifest.name}")

    # The config the pods get.
    config, config_where = None, rel(K8S)
    for path, doc in by_kind.get("ConfigMap", []):
        for key, text in (doc.get("data") or {}).items():
            if key.endswith(".toml"):
                config_where = f"{rel(path)} (data.{key})"
                config = check_streamcast_config(config_where, text)
    if config is None:
        fail(rel(K8S), "no ConfigMap holding the streamcast TOML")
    shutdown = shutdown_seconds(config)
    group = (config or {}).get("consumer", {}).get("group_id", DEFAULT_GROUP)
    input_topic = (config or {}).get("topics", {}).get("input", DEFAULT_INPUT_TOPIC)

    deployments = by_kind.get("Deployment", [])
    if not deployments:
        fail(rel(K8S), "no Deployment")
    for path, dep in deployments:
        where = f"{rel(path)} (Deployment {dep.get('metadata', {}).get('name')})"
        spec = dep.get("spec", {})
        pod = spec.get("template", {}).get("spec", {})
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if not isinstance(grace, int) or grace <= shutdown:
            fail(where, f"terminationGracePeriodSeconds ({grace}) must exceed processing.shutdown_timeout ({shutdown:g}s)")
        if not (pod.get("securityContext") or {}).get("runAsNonRoot"):
            fail(where, "pod securityContext.runAsNonRoot should be true")
        containers = pod.get("containers") or []
        if not containers:
            fail(where, "no containers")
        for c in containers:
            cwhere = f"{where} container {c.get('name')}"
            ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", []) or []}
            for probe, expected in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                get = (c.get(probe) or {}).get("httpGet") or {}
                if get.get("path") != expected:
                    fail(cwhere, f"{probe} must be an httpGet of {expected} (found {get.get('path')!r})")
                port = get.get("port")
                if port not in ports and port not in ports.values():
                    fail(cwhere, f"{probe} port {port!r} is not a container port")
            resources = c.get("resources") or {}
            if not resources.get("requests") or not resources.get("limits"):
                fail(cwhere, "needs resources.requests and resources.limits")
            env = {e.get("name") for e in c.get("env", []) or []}
            if "STREAMCAST_BOOTSTRAP_SERVERS" not in env:
                fail(cwhere, "should set STREAMCAST_BOOTSTRAP_SERVERS")

    for path, pdb in by_kind.get("PodDisruptionBudget", []) or [(K8S, None)]:
        if pdb is None:
            fail(rel(K8S), "no PodDisruptionBudget")
        elif not {"minAvailable", "maxUnavailable"} & set(pdb.get("spec", {})):
            fail(rel(path), "PodDisruptionBudget needs minAvailable or maxUnavailable")

    scaled = by_kind.get("ScaledObject", [])
    if not scaled:
        fail(rel(K8S), "no KEDA ScaledObject")
    deployment_names = {d.get("metadata", {}).get("name") for _, d in deployments}
    for path, so in scaled:
        where = rel(path)
        spec = so.get("spec", {})
        if spec.get("scaleTargetRef", {}).get("name") not in deployment_names:
            fail(where, "scaleTargetRef.name does not name the Deployment")
        lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi <= partitions):
            fail(where, f"need minReplicaCount <= maxReplicaCount <= partitions ({partitions}); got {lo}, {hi}")
        kafka = [t for t in spec.get("triggers", []) if t.get("type") == "kafka"]
        if not kafka:
            fail(where, "no `kafka` trigger")
        for trigger in kafka:
            meta = trigger.get("metadata", {})
            if meta.get("consumerGroup") != group:
                fail(where, f"kafka trigger consumerGroup {meta.get('consumerGroup')!r} != consumer.group_id {group!r}")
            if meta.get("topic") != input_topic:
                fail(where, f"kafka trigger topic {meta.get('topic')!r} != topics.input {input_topic!r}")
            if not str(meta.get("lagThreshold", "")).isdigit():
                fail(where, "kafka trigger needs a numeric lagThreshold (as a string)")

    for path, svc in by_kind.get("Service", []):
        if not any(p.get("port") == 9464 for p in svc.get("spec", {}).get("ports", [])):
            fail(rel(path), "Service should expose the metrics port 9464")
    return manifests


def run_tool(args: list[str], timeout: int = 60) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        notes.append(f"{args[0]} {args[1] if len(args) > 1 else ''}: skipped ({e})")
        return None


def check_k8s_tools(manifests: list[tuple[Path, dict]]) -> None:
    """kubectl kustomize (offline) and kubernetes-validate schemas (offline), when available."""
    rendered = None
    if shutil.which("kubectl"):
        result = run_tool(["kubectl", "kustomize", str(K8S)])
        if result is not None:
            if result.returncode != 0:
                fail("kubectl kustomize deploy/k8s", result.stderr.strip() or f"exit {result.returncode}")
            else:
                rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
                notes.append(f"kubectl kustomize deploy/k8s: ok ({len(rendered)} objects)")
    else:
        notes.append("kubectl kustomize: skipped (no kubectl)")
    try:
        import kubernetes_validate  # type: ignore[import-not-found]
    except ModuleNotFoundError:
        notes.append("kubernetes-validate: skipped (package not installed)")
        return
    version = kubernetes_validate.latest_version()
    objects = rendered if rendered is not None else [d for _, d in manifests if d.get("kind") != "Kustomization"]
    checked = 0
    for obj in objects:
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
            checked += 1
        except kubernetes_validate.SchemaNotFoundError:
            notes.append(f"kubernetes-validate: no schema for {name} (CRD), not schema-checked")
        except kubernetes_validate.ValidationError as e:
            fail(f"kubernetes-validate {name}", str(e).splitlines()[0])
    notes.append(f"kubernetes-validate (Kubernetes {version} schemas, strict): {checked} objects valid")


def check_compose_tool() -> None:
    """`docker compose config -q` when the compose plugin exists (it needs no Docker engine)."""
    if not shutil.which("docker"):
        notes.append("docker compose config: skipped (no docker client)")
        return
    probe = run_tool(["docker", "compose", "version"], timeout=20)
    if probe is None or probe.returncode != 0:
        notes.append("docker compose config: skipped (no compose plugin)")
        return
    version = probe.stdout.strip()
    for profile in ([], ["--profile", "monitoring"], ["--profile", "sasl"]):
        label = f"docker compose config -q {' '.join(profile)}".strip()
        result = run_tool(["docker", "compose", "-f", str(COMPOSE), *profile, "config", "-q"])
        if result is None:
            continue
        if result.returncode != 0:
            fail(label, result.stderr.strip() or f"exit {result.returncode}")
        else:
            notes.append(f"{label}: ok ({version})")


# --------------------------------------------------------------------------------------------
# Prometheus and Grafana


def check_prometheus(path: Path, doc: dict) -> None:
    jobs = doc.get("scrape_configs") if isinstance(doc, dict) else None
    if not jobs:
        fail(rel(path), "no scrape_configs")
        return
    text = json.dumps(jobs)
    if "9464" not in text:
        fail(rel(path), "no scrape job on the workers' port 9464")


def check_rules(path: Path, doc) -> None:
    groups = doc.get("groups") if isinstance(doc, dict) else None
    if not groups:
        fail(rel(path), "no rule groups")
        return
    for group in groups:
        for rule in group.get("rules", []):
            if not rule.get("record") or not isinstance(rule.get("expr"), str):
                fail(rel(path), f"a rule without record or expr: {rule}")
                continue
            for metric in sorted(set(re.findall(r"\bstreamcast_[a-z0-9_]+", rule["expr"])) - KNOWN_METRICS):
                fail(rel(path), f"rule {rule['record']} reads `{metric}`, which the worker does not export")


def check_dashboard(path: Path, dashboard) -> None:
    if not isinstance(dashboard, dict) or not dashboard.get("panels"):
        fail(rel(path), "not a Grafana dashboard (no panels)")
        return
    exprs: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard.get("panels"))
    if not exprs:
        fail(rel(path), "no Prometheus queries")
    used = set()
    for expr in exprs:
        for metric in re.findall(r"\bstreamcast_[a-z0-9_]+", expr):
            used.add(re.sub(r"_(bucket|sum|count)$", "", metric))
    for metric in sorted(used - KNOWN_METRICS):
        fail(rel(path), f"queries `{metric}`, which the worker does not export")


# --------------------------------------------------------------------------------------------


def main() -> int:
    if not DEPLOY.is_dir():
        print(f"deploy check: {rel(DEPLOY)}/ is missing", file=sys.stderr)
        return 1
    checked = 0
    docker_config = None

    for path in sorted(DEPLOY.rglob("*")):
        if not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix in (".yml", ".yaml"):
            docs = load_yaml(path)
            if path == DEPLOY / "prometheus.yml" and docs:
                check_prometheus(path, docs[0])
            if path == DEPLOY / "prometheus-rules.yml" and docs:
                check_rules(path, docs[0])
        elif suffix == ".json":
            data = load_json(path)
            if path.parent == DASHBOARDS and data is not None:
                check_dashboard(path, data)
        elif suffix == ".toml":
            config = check_streamcast_config(rel(path), path.read_text(encoding="utf-8"))
            if path.name == "streamcast.docker.toml":
                docker_config = config
        else:
            continue
        checked += 1

    if docker_config is None:
        fail(rel(DEPLOY), "streamcast.docker.toml is missing or invalid")
    check_dockerfile()
    checked += 2  # Dockerfile, .dockerignore
    partitions = check_compose(docker_config)
    checked += 1
    manifests = check_k8s(partitions)
    check_k8s_tools(manifests)
    check_compose_tool()

    for note in notes:
        print(f"  {note}")
    if errors:
        print(f"deploy check: {len(errors)} problem(s):", file=sys.stderr)
        for error in errors:
            print(f"  {error}", file=sys.stderr)
        return 1
    print(f"deploy check: {checked} files ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
