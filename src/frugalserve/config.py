"""Configuration: a YAML file loaded once into frozen dataclasses.

Defaults live in the dataclass fields below and nowhere else. :func:`parse` walks the YAML mapping
against the dataclasses' type hints, so every section a later feature adds is checked the same way,
and every error names its key path (``pools[1].backend.url: not a URL``). Unknown keys are errors:
a typo must not silently fall back to a default.

A section may define ``validate(path)`` (its values) and ``validate_keys(path, given)`` (which keys the
YAML spelled out, for rules such as "``lifecycle:`` means nothing on a ``url`` backend").
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union
from urllib.parse import urlsplit

import yaml

from frugalserve.accounting.config import AccountingConfig, AuthConfig
from frugalserve.budget.limits import LimitsConfig
from frugalserve.config_errors import ConfigError as ConfigError  # re-exported: its home before config_errors
from frugalserve.lifecycle.config import AutoscaleConfig, LifecycleConfig, ReplicasConfig
from frugalserve.routing.config import RoutingConfig

ENV_CONFIG = "FRUGALSERVE_CONFIG"
T = typing.TypeVar("T")

# ---------------------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True)
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    database: str = "sqlite:///frugalserve.db"
    max_body_mb: float = 20.0
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 600.0
    shutdown_grace_s: float = 30.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # One log line per request (method, path, status, duration, request id) on logger frugalserve.access.
    access_log: bool = False
    # Resized images kept by content hash, so a repeated image is decoded and resized once.
    image_cache_mb: float = 256.0
    # A body larger than this is parsed, counted and encoded in a worker process, never on the event loop
    # (parsing 20 MB holds the loop for 50-110 ms); up to large_body_workers such bodies at once (0: none,
    # every body is handled in the gateway process).
    large_body_mb: float = 1.0
    large_body_workers: int = 1
    # When set, GET /metrics needs "Authorization: Bearer <token>" (Prometheus: authorization.credentials).
    metrics_token: str | None = None
    # The listening socket's limits against slow and oversized clients (frugalserve.listener).
    max_header_kb: float = 64.0  # request line + headers; more gets 431
    header_timeout_s: float = 10.0  # from connect (or a request's first byte) to the end of its headers: 408
    body_timeout_s: float = 60.0  # from the end of the headers to the end of the body: 408
    max_connections: int = 1000  # open client connections; a request on one more gets 503
    # NVML GPU telemetry (metrics/gpu.py): read this often, off the event loop; 0: off.
    gpu_metrics_interval_s: float = 5.0
    # Seconds between scrapes of each ready replica's own /metrics (frugalserve.metrics.upstream); 0: none.
    upstream_metrics_interval_s: float = 5.0

    def validate(self, path: str) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"{path}.port", "must be between 1 and 65535")
        for name in (
            "max_body_mb",
            "connect_timeout_s",
            "request_timeout_s",
            "max_header_kb",
            "header_timeout_s",
            "body_timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{path}.{name}", "must be > 0")
        if self.shutdown_grace_s < 0:
            raise ConfigError(f"{path}.shutdown_grace_s", "must be >= 0")
        if self.max_connections < 1:
            raise ConfigError(f"{path}.max_connections", "must be >= 1")
        if self.large_body_mb < 0:
            raise ConfigError(f"{path}.large_body_mb", "must be >= 0")
        if self.large_body_workers < 0:
            raise ConfigError(f"{path}.large_body_workers", "must be >= 0")
        if self.gpu_metrics_interval_s < 0:
            raise ConfigError(f"{path}.gpu_metrics_interval_s", "must be >= 0 (0: off)")
        if self.upstream_metrics_interval_s < 0:
            raise ConfigError(f"{path}.upstream_metrics_interval_s", "must be >= 0 (0 turns scraping off)")


@dataclass(frozen=True)
class RayBackendConfig:
    """Run each replica as a Ray actor on a Ray cluster (frugalserve.lifecycle.provisioners.ray): the actor
    starts ``backend.command`` on the node Ray placed it on. Needs the ray extra (pip install 'frugalserve[ray]')."""

    # auto: the cluster this machine belongs to (RAY_ADDRESS, or a head started here with `ray start`);
    # local: start a Ray head inside the gateway (one machine); ray://host:10001: Ray Client; host:6379: a head.
    address: str = "auto"
    num_gpus: float = 1.0  # GPUs one replica's actor reserves: Ray places it on a node with that many free
    num_cpus: float = 1.0
    resources: Mapping[str, float] = field(default_factory=dict)  # custom Ray resources, e.g. {"L4": 1}
    runtime_env: Mapping[str, Any] = field(default_factory=dict)  # Ray's runtime_env (env_vars, pip, ...)
    namespace: str = "frugalserve"
    # How long an actor may wait for a node with room; then the start is refused (the pool tries again later).
    placement_timeout_s: float = 30.0

    def validate(self, path: str) -> None:
        if self.address not in ("auto", "local"):
            target = self.address.removeprefix("ray://")
            host, _, port = target.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(
                    f"{path}.address", f"must be auto, local, ray://host:port or host:port, got {self.address!r}"
                )
        for name in ("num_gpus", "num_cpus"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{path}.{name}", "must be >= 0")
        for key, amount in self.resources.items():
            if key in ("GPU", "CPU"):
                raise ConfigError(f"{path}.resources.{key}", f"set num_{key.lower()}s instead (Ray refuses {key} here)")
            if amount < 0:
                raise ConfigError(f"{path}.resources.{key}", "must be >= 0")
        if self.placement_timeout_s <= 0:
            raise ConfigError(f"{path}.placement_timeout_s", "must be > 0")
        if not self.namespace:
            raise ConfigError(f"{path}.namespace", "must not be empty")


@dataclass(frozen=True)
class BackendConfig:
    """A pool's model server: a URL someone else runs (`url`), or a process the gateway manages (`command`)."""

    url: str | None = None
    # Several running servers of the same model, each a replica of the pool (instead of url).
    urls: tuple[str, ...] = ()
    # Managed: a command line with {port} (and {model}) placeholders, started on demand (docs/lifecycle.md).
    command: str | None = None
    port: int | None = None  # managed: fixed port for {port}; default: a free port at each start
    env: Mapping[str, str] = field(default_factory=dict)  # managed: extra environment of the process
    startup_timeout_s: float = 600.0  # managed: from launch until health_path answers 200
    stop_timeout_s: float = 15.0  # managed: SIGTERM, then SIGKILL of the process group after this long
    sleep_api: Literal["auto", "vllm", "none"] = "auto"  # managed: vLLM's /sleep and /wake_up; auto = probe
    log_dir: str = "logs"  # managed: <log_dir>/<pool>-<replica>.log gets the process output
    # Path probed to decide a backend is alive (vLLM and the built-in engine: /health).
    health_path: str = "/health"
    # Extra headers sent upstream (e.g. an upstream API key).
    headers: Mapping[str, str] = field(default_factory=dict)
    # Managed: run each replica's command as a Ray actor on a Ray cluster instead of a local process.
    ray: RayBackendConfig | None = None

    @property
    def static_urls(self) -> tuple[str, ...]:
        """The running servers of a pool someone else runs (empty for a managed backend)."""
        return (self.url,) if self.url is not None else self.urls

    def validate(self, path: str) -> None:
        given = [name for name, value in (("url", self.url), ("urls", self.urls), ("command", self.command)) if value]
        if not given:
            raise ConfigError(
                f"{path}.url", "required: url (a running server), urls (several) or command (a managed one)"
            )
        if len(given) > 1:
            raise ConfigError(f"{path}.{given[1]}", f"set one of url, urls and command, not {' and '.join(given)}")
        if self.url is not None:
            _check_url(f"{path}.url", self.url)
        for i, url in enumerate(self.urls):
            _check_url(f"{path}.urls[{i}]", url)
        if len(set(self.urls)) != len(self.urls):
            raise ConfigError(f"{path}.urls", "lists a server twice")
        if self.command is not None and "{port}" not in self.command and self.port is None:
            raise ConfigError(f"{path}.command", "must contain {port} (or set backend.port)")
        if self.port is not None and not 0 < self.port < 65536:
            raise ConfigError(f"{path}.port", "must be between 1 and 65535")
        for name in ("startup_timeout_s", "stop_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{path}.{name}", "must be > 0")
        if not self.health_path.startswith("/"):
            raise ConfigError(f"{path}.health_path", "must start with '/'")
        if self.ray is not None and self.port is not None:
            raise ConfigError(f"{path}.port", "a Ray replica picks a free port on its node; leave port out")

    def validate_keys(self, path: str, given: frozenset[str]) -> None:
        if self.static_urls:
            for name in MANAGED_BACKEND_KEYS:
                if name in given:
                    raise ConfigError(f"{path}.{name}", f"only for a managed backend (command); {NOT_RUN}")


NOT_RUN = "the gateway does not run a url backend"
# Keys of `backend:` that only a managed backend (`command`) uses.
MANAGED_BACKEND_KEYS = ("port", "env", "startup_timeout_s", "stop_timeout_s", "sleep_api", "log_dir", "ray")


@dataclass(frozen=True)
class GpuConfig:
    """What a pool's replica occupies and costs. Placement keys feed the lifecycle (several pools sharing
    one device's memory); price keys feed accounting (GPU-seconds to dollars)."""

    device: str | None = None  # a name from the top-level `devices:`; pools naming the same one share it
    memory_gb: float = 0.0  # memory one replica needs on that device
    type: str = "cpu"  # e.g. "L4", "A10G", "H100": reports only
    count: int = 1  # GPUs one replica bills for
    usd_per_hour: float = 0.0  # price of one GPU per hour
    billing: Literal["on_demand", "reserved"] = "on_demand"
    # NVML indices of the GPUs the pool runs on (GPU telemetry); default: backend.env CUDA_VISIBLE_DEVICES.
    indices: tuple[int, ...] | None = None

    def validate(self, path: str) -> None:
        for i, index in enumerate(self.indices or ()):
            if index < 0:
                raise ConfigError(f"{path}.indices[{i}]", f"must be >= 0, got {index}")
            if index in (self.indices or ())[:i]:
                raise ConfigError(f"{path}.indices[{i}]", f"must not list GPU {index} twice")
        if self.memory_gb < 0:
            raise ConfigError(f"{path}.memory_gb", "must be >= 0")
        if self.count < 1:
            raise ConfigError(f"{path}.count", "must be >= 1")
        if self.usd_per_hour < 0:
            raise ConfigError(f"{path}.usd_per_hour", "must be >= 0")


@dataclass(frozen=True)
class DeviceConfig:
    name: str
    memory_gb: float

    def validate(self, path: str) -> None:
        if self.memory_gb <= 0:
            raise ConfigError(f"{path}.memory_gb", "must be > 0")


@dataclass(frozen=True)
class PoolConfig:
    name: str
    model: str
    backend: BackendConfig
    aliases: tuple[str, ...] = ()
    # The model name sent upstream; defaults to `model` (vLLM's --served-model-name).
    upstream_model: str | None = None
    gpu: GpuConfig = field(default_factory=GpuConfig)
    # Token counting, image budgets and caps (frugalserve.budget). "qwen3": the backend serves a Qwen3 /
    # Qwen3-VL model with its ChatML template, so the gateway counts exactly and resizes images itself;
    # "none": any other model, passed through uncounted (the limits below then do not apply).
    tokenizer: Literal["qwen3", "none"] = "qwen3"
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    # Managed backends only: idle ladder, holding, prewarm (frugalserve.lifecycle.config).
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    # model "auto" (frugalserve.routing): the pool's tier (a name from routing.tiers); null: never chosen by auto.
    tier: str | None = None
    capacity: int = 16  # requests one replica serves at once (its batch); utilisation = in flight / capacity
    modalities: tuple[Literal["text", "image", "video"], ...] = ("text", "image", "video")
    # Managed backends only: how many replicas, and how the autoscaler chooses between min and max
    # (frugalserve.lifecycle.autoscale; docs/scaling.md).
    replicas: ReplicasConfig = field(default_factory=ReplicasConfig)
    autoscale: AutoscaleConfig = field(default_factory=AutoscaleConfig)

    def validate(self, path: str) -> None:
        if not self.name:
            raise ConfigError(f"{path}.name", "must not be empty")
        if not self.model:
            raise ConfigError(f"{path}.model", "must not be empty")
        if self.capacity < 1:
            raise ConfigError(f"{path}.capacity", "must be >= 1")
        if "text" not in self.modalities:
            raise ConfigError(f"{path}.modalities", "must include 'text'")
        if self.replicas.max > 1 and self.backend.port is not None and self.backend.ray is None:
            raise ConfigError(
                f"{path}.backend.port", "a fixed port serves one replica; leave it out when replicas.max > 1"
            )

    def validate_keys(self, path: str, given: frozenset[str]) -> None:
        # The idle ladder and holding act on processes the gateway runs; silently ignoring them would let a
        # user believe a url backend sleeps when idle.
        for name in ("lifecycle", "replicas", "autoscale"):
            if name in given and self.backend.static_urls:
                raise ConfigError(f"{path}.{name}", f"only for a managed backend (backend.command); {NOT_RUN}")

    @property
    def served_model(self) -> str:
        return self.upstream_model or self.model


@dataclass(frozen=True)
class TracingConfig:
    """OpenTelemetry traces of each request (frugalserve.tracing), exported over OTLP/HTTP; off by default.
    Needs the otel extra (pip install 'frugalserve[otel]')."""

    enabled: bool = False
    endpoint: str = "http://127.0.0.1:4318/v1/traces"  # an OTLP/HTTP collector's traces URL
    service_name: str = "frugalserve"
    sample_ratio: float = 1.0  # of traces begun here; a caller's traceparent decides for its own traces
    headers: Mapping[str, str] = field(default_factory=dict)  # sent with each export (e.g. an API key)

    def validate(self, path: str) -> None:
        _check_url(f"{path}.endpoint", self.endpoint)
        if not 0.0 <= self.sample_ratio <= 1.0:
            raise ConfigError(f"{path}.sample_ratio", f"must be between 0 and 1, got {self.sample_ratio:g}")
        if not self.service_name:
            raise ConfigError(f"{path}.service_name", "must not be empty")


@dataclass(frozen=True)
class UIConfig:
    """The web UI (frugalserve.ui): chat at /ui, the operator view at /ui/admin. Gradio, imported only when
    enabled; it needs the ui extra (pip install 'frugalserve[ui]'), which `make run` installs. Off unless
    asked for (the built-in demo config asks): a production gateway loads no web framework it does not serve."""

    enabled: bool = False
    # A line shown above the chat, e.g. what users should know about the model (the demo's is random).
    banner: str | None = None


@dataclass(frozen=True)
class Config:
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    pools: tuple[PoolConfig, ...] = ()
    devices: tuple[DeviceConfig, ...] = ()
    auth: AuthConfig = field(default_factory=AuthConfig)
    accounting: AccountingConfig = field(default_factory=AccountingConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    ui: UIConfig = field(default_factory=UIConfig)
    # Where the config came from, for messages; not a YAML key.
    source: str = field(default="<built-in>", metadata={"internal": True})

    def validate(self, path: str) -> None:
        first_of_name: dict[str, int] = {}
        routed: dict[str, str] = {}  # a name clients may send as "model" -> the key that declared it first
        for i, pool in enumerate(self.pools):
            first = first_of_name.setdefault(pool.name, i)
            if first != i:
                raise ConfigError(f"pools[{i}].name", f"duplicate pool name {pool.name!r} (also pools[{first}])")
            keys = [("name", pool.name), ("model", pool.model)]
            keys += [(f"aliases[{k}]", alias) for k, alias in enumerate(pool.aliases)]
            for key, value in keys:
                if value == "auto":
                    raise ConfigError(f"pools[{i}].{key}", "'auto' is reserved: it asks the router to choose a tier")
                other = routed.setdefault(value, f"pools[{i}].{key}")
                if not other.startswith(f"pools[{i}]."):
                    raise ConfigError(f"pools[{i}].{key}", f"{value!r} is already used by {other}")
            device = pool.gpu.device
            if device is not None and device not in {d.name for d in self.devices}:
                raise ConfigError(f"pools[{i}].gpu.device", f"unknown device {device!r} (declare it under devices:)")
            if pool.tier is not None and pool.tier not in self.routing.tiers:
                raise ConfigError(
                    f"pools[{i}].tier", f"unknown tier {pool.tier!r} (routing.tiers: {', '.join(self.routing.tiers)})"
                )
        self._validate_tiers()
        addresses = {p.backend.ray.address for p in self.pools if p.backend.ray is not None}
        if len(addresses) > 1:
            i = next(
                i
                for i, p in enumerate(self.pools)
                if p.backend.ray is not None and p.backend.ray.address != min(addresses)
            )
            raise ConfigError(
                f"pools[{i}].backend.ray.address",
                f"every Ray pool must use the same cluster (the gateway joins one): {', '.join(sorted(addresses))}",
            )

    def _validate_tiers(self) -> None:
        """Model auto counts a request before it knows the pool, so the tiers must count it the same way."""
        tiered = [(i, p) for i, p in enumerate(self.pools) if p.tier is not None]
        for i, pool in tiered:
            if pool.tokenizer == "none":
                raise ConfigError(
                    f"pools[{i}].tokenizer", "a pool with a tier must count its prompts (the router needs the counts)"
                )
            first_i, first = tiered[0]
            for part in ("image", "fetch"):
                if getattr(pool.limits, part) != getattr(first.limits, part):
                    raise ConfigError(
                        f"pools[{i}].limits.{part}",
                        f"differs from pools[{first_i}].limits.{part}: pools with a tier share image and fetch limits, "
                        "because model auto counts a request before it chooses the pool",
                    )

    def validate_keys(self, path: str, given: frozenset[str]) -> None:
        # A config without `pools:` is fine for `keys` and `report` (they need only the database); an empty
        # list is a mistake. `frugalserve up` refuses to serve no pool at all.
        if "pools" in given and not self.pools:
            raise ConfigError("pools", "must list at least one pool")

    def pool(self, name: str) -> PoolConfig:
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(name)


# ---------------------------------------------------------------------------------------------------------
# Loading


def _check_url(path: str, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(path, f"not a URL: {value!r} (expected http://host:port)")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ConfigError(path, f"not a URL: {value!r} ({exc})") from None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(path, errors[0].split(": ", 1)[-1] if errors else "invalid value")
    if origin is Literal:
        if value not in args:
            raise ConfigError(path, f"must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return parse(tp, value, path)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(path, f"must be a list, got {type(value).__name__}")
        item = args[0]
        return tuple(_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"must be a mapping, got {type(value).__name__}")
        kt, vt = args or (str, Any)
        return types.MappingProxyType({_convert(k, kt, path): _convert(v, vt, f"{path}.{k}") for k, v in value.items()})
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, f"must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"must be a string, got {value!r}")
        return value
    raise ConfigError(path, f"unsupported type {_type_name(tp)}")  # a bug in a section's declaration


def parse(cls: type[T], data: Any, path: str = "") -> T:
    """Build the frozen dataclass ``cls`` from plain YAML data, checking types; errors name the key."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise ConfigError(key, f"unknown key (known: {', '.join(sorted(fields))})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(key, "required")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(path)
    validate_keys = getattr(obj, "validate_keys", None)
    if validate_keys is not None:
        validate_keys(path, frozenset(data))
    return obj


def load_text(text: str, source: str = "<string>") -> Config:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("", f"not valid YAML: {_yaml_problem(exc)}") from None
    config = parse(Config, data)
    return dataclasses.replace(config, source=source)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    return str(exc)


def load_file(path: str | os.PathLike[str]) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config {p}: {exc.strerror}") from None
    try:
        return load_text(text, str(p))
    except ConfigError as exc:
        raise ConfigError(exc.path, f"{exc.message} (in {p})") from None


DEFAULT_CONFIG_NAME = "default_config.yaml"


def default_config_text() -> str:
    return (Path(__file__).parent / DEFAULT_CONFIG_NAME).read_text(encoding="utf-8")


def load(path: str | None = None, environ: Mapping[str, str] = os.environ) -> Config:
    """The config chosen by ``--config``, else ``$FRUGALSERVE_CONFIG``, else the built-in demo config."""
    chosen = path or environ.get(ENV_CONFIG)
    if chosen:
        return load_file(chosen)
    return load_text(default_config_text(), "<built-in demo config>")
