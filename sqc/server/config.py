"""The server's configuration: a YAML file in the shape DeepSparse Server users have, or the
same thing built from `sqc serve` options.

```yaml
host: 127.0.0.1          # loopback unless told otherwise
port: 5543
threads: 2               # engine threads per model (DeepSparse: num_cores)
workers: 64              # HTTP requests handled at once (DeepSparse: num_workers)
endpoints:
  - name: question_answering        # served at /v2/models/<name>/infer
    route: /unpruned/predict        # optional extra route
    task: question-answering
    model: artifacts/mymodel        # artifact directory or .onnx (compiled at start-up, cached)
    batch_size: 32                  # most questions gathered into one engine call
    sequence_length: [64, 384]      # buckets (DeepSparse: bucketing.sequence_lengths)
    kwargs: {doc_stride: 128, max_answer_length: 15}
```

Every key is checked: an unknown key is an error that names it and where it is.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sqc.api import QA_TASKS

__all__ = ["ConfigError", "EndpointConfig", "ServerConfig", "config_from_dict", "load_config"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5543
DEFAULT_WORKERS = 64
DEFAULT_BATCH_SIZE = 32
DEFAULT_NAME = "question_answering"  # the name DeepSparse's client examples call
API_KEY_ENV = "SQC_API_KEY"
# The options of QuestionAnsweringPipeline a config may set per endpoint.
QA_KWARGS = (
    "doc_stride",
    "max_answer_length",
    "n_best_size",
    "max_question_length",
    "version_2_with_negative",
    "null_score_diff_threshold",
)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ConfigError(ValueError):
    """A configuration that cannot be served; the message names the key and its place."""


@dataclass
class EndpointConfig:
    """One model, served at /v2/models/<name>/infer (and `route`, if given)."""

    name: str = DEFAULT_NAME
    model: str | None = None  # None: the bundled default model
    task: str = "question-answering"
    route: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    sequence_length: list[int] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ServerConfig:
    endpoints: list[EndpointConfig] = field(default_factory=lambda: [EndpointConfig()])
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    threads: int | None = None  # engine threads per model; None: the physical cores
    workers: int = DEFAULT_WORKERS
    api_key: str | None = None
    max_request_bytes: int = 1 << 20  # 1 MiB: a long article with room to spare
    max_context_chars: int = 100_000
    max_items: int = 64  # (question, context) pairs in one request
    max_batch_wait_ms: float = 5.0
    drain_seconds: float = 30.0

    def __post_init__(self) -> None:
        names = [endpoint.name for endpoint in self.endpoints]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ConfigError(
                f"endpoint name {duplicates[0]!r} is used more than once; give each a name"
            )
        routes = [endpoint.route for endpoint in self.endpoints if endpoint.route]
        duplicates = sorted({route for route in routes if routes.count(route) > 1})
        if duplicates:
            raise ConfigError(f"route {duplicates[0]!r} is used by more than one endpoint")
        if not self.endpoints:
            raise ConfigError("endpoints: at least one endpoint is needed")


def load_config(path: str | os.PathLike) -> ServerConfig:
    """Read a YAML server configuration (see the module docstring)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    try:
        config = config_from_dict(data if data is not None else {})
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    # Relative model paths are relative to the config file, as users expect of a file.
    for endpoint in config.endpoints:
        if endpoint.model and not Path(endpoint.model).is_absolute():
            candidate = Path(path).parent / endpoint.model
            if candidate.exists():
                endpoint.model = str(candidate)
    return config


# key: (type or types, the DeepSparse spelling it may also have)
_SERVER_KEYS = {
    "host": (str, None),
    "port": (int, None),
    "threads": (int, "num_cores"),
    "workers": (int, "num_workers"),
    "api_key": (str, None),
    "max_request_bytes": (int, None),
    "max_context_chars": (int, None),
    "max_items": (int, None),
    "max_batch_wait_ms": ((int, float), None),
    "drain_seconds": ((int, float), None),
}
_ENDPOINT_KEYS = {
    "name": (str, None),
    "model": (str, "model_path"),
    "task": (str, None),
    "route": (str, None),
    "batch_size": (int, None),
    "sequence_length": ((int, list), "sequence_lengths"),
    "kwargs": (dict, None),
}


def config_from_dict(data: Any) -> ServerConfig:
    """A checked ServerConfig from parsed YAML (a mapping)."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping at the top level, got {type(data).__name__}")
    values = _pick(data, _SERVER_KEYS, "", extra=("endpoints",))
    raw_endpoints = data.get("endpoints")
    if raw_endpoints is None:
        endpoints = [EndpointConfig()]
    elif not isinstance(raw_endpoints, list):
        raise ConfigError(f"endpoints: expected a list, got {type(raw_endpoints).__name__}")
    else:
        endpoints = [_endpoint(item, i) for i, item in enumerate(raw_endpoints)]
        _default_names(endpoints, raw_endpoints)
    config = ServerConfig(endpoints=endpoints, **values)
    check_server(config)
    return config


def check_server(config: ServerConfig) -> None:
    """Range checks of the top-level values (shared by the YAML and the command line)."""
    if not 0 <= config.port <= 65535:
        raise ConfigError(f"port: {config.port} is not a TCP port (0-65535)")
    for key in ("workers", "max_request_bytes", "max_context_chars", "max_items"):
        if getattr(config, key) < 1:
            raise ConfigError(f"{key}: must be a positive integer, got {getattr(config, key)}")
    if config.threads is not None and config.threads < 1:
        raise ConfigError(f"threads: must be a positive integer, got {config.threads}")
    if config.max_batch_wait_ms < 0 or config.drain_seconds < 0:
        raise ConfigError("max_batch_wait_ms and drain_seconds must not be negative")
    if config.api_key is not None and not config.api_key:
        raise ConfigError("api_key: must not be empty")


def check_endpoint(endpoint: EndpointConfig, where: str = "") -> None:
    if endpoint.task not in QA_TASKS:
        raise ConfigError(
            f"{where}task: '{endpoint.task}' is not supported; sqc serves {', '.join(QA_TASKS)}"
        )
    if not NAME_PATTERN.match(endpoint.name):
        raise ConfigError(
            f"{where}name: {endpoint.name!r} must be letters, digits, '_', '-' or '.'"
        )
    if endpoint.route is not None and not endpoint.route.startswith("/"):
        raise ConfigError(f"{where}route: {endpoint.route!r} must start with '/'")
    if endpoint.batch_size < 1:
        raise ConfigError(f"{where}batch_size: must be a positive integer")
    if endpoint.model is not None and endpoint.model.startswith("zoo:"):
        raise ConfigError(
            f"{where}model: sqc never downloads models; give an artifact directory or an "
            f".onnx file instead of {endpoint.model!r}"
        )
    unknown = [key for key in endpoint.kwargs if key not in QA_KWARGS]
    if unknown:
        raise ConfigError(
            f"{where}kwargs: unknown key '{unknown[0]}' (known: {', '.join(QA_KWARGS)})"
        )


def _endpoint(item: Any, index: int) -> EndpointConfig:
    where = f"endpoints[{index}]."
    if not isinstance(item, dict):
        raise ConfigError(f"endpoints[{index}]: expected a mapping, got {type(item).__name__}")
    item = dict(item)
    bucketing = item.pop("bucketing", None)  # DeepSparse: bucketing: {sequence_lengths: [...]}
    if bucketing is not None:
        if not isinstance(bucketing, dict) or set(bucketing) - {"sequence_lengths"}:
            keys = (
                sorted(set(bucketing) - {"sequence_lengths"}) if isinstance(bucketing, dict) else []
            )
            raise ConfigError(
                f"{where}bucketing: expected {{sequence_lengths: [...]}}"
                + (f"; unknown key '{keys[0]}'" if keys else "")
            )
        item.setdefault("sequence_length", bucketing.get("sequence_lengths"))
    values = _pick(item, _ENDPOINT_KEYS, where)
    lengths = values.get("sequence_length")
    if lengths is not None:
        lengths = [lengths] if isinstance(lengths, int) else lengths
        if not lengths or not all(isinstance(n, int) and n > 0 for n in lengths):
            raise ConfigError(f"{where}sequence_length: expected positive integers, got {lengths}")
        values["sequence_length"] = sorted(set(lengths))
    endpoint = EndpointConfig(**values)
    check_endpoint(endpoint, where)
    return endpoint


def _default_names(endpoints: list[EndpointConfig], raw: list[dict]) -> None:
    """One unnamed endpoint is `question_answering` (DeepSparse's name); several unnamed ones are
    named after their models."""
    unnamed = [i for i, item in enumerate(raw) if "name" not in item]
    if len(endpoints) == 1 or len(unnamed) <= 1:
        return
    for i in unnamed:
        endpoints[i].name = model_name(endpoints[i].model)


def model_name(model: str | None) -> str:
    """An endpoint name from a model path: the artifact directory or the .onnx file's stem."""
    if model is None:
        return DEFAULT_NAME
    path = Path(model)
    stem = (
        path.parent.name if path.name == "model.onnx" else path.stem if path.suffix else path.name
    )
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem) or DEFAULT_NAME


def _pick(data: dict, keys: dict, where: str, extra: tuple[str, ...] = ()) -> dict:
    values: dict[str, Any] = {}
    aliases = {alias: key for key, (_, alias) in keys.items() if alias}
    for raw_key, value in data.items():
        key = aliases.get(raw_key, raw_key)
        if key in extra:
            continue
        if key not in keys:
            known = ", ".join([*keys, *extra])
            raise ConfigError(f"{where}{raw_key}: unknown key (known: {known})")
        if key in values:
            raise ConfigError(f"{where}{raw_key}: given twice (as {key} and {keys[key][1]})")
        types = keys[key][0]
        if isinstance(value, bool) or not isinstance(value, types):
            wanted = " or ".join(
                t.__name__ for t in (types if isinstance(types, tuple) else (types,))
            )
            raise ConfigError(
                f"{where}{raw_key}: expected {wanted}, got {type(value).__name__} ({value!r})"
            )
        values[key] = value
    return values
