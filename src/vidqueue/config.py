"""Typed settings, read once at start: defaults < vidqueue.toml < VIDQUEUE_* variables < command-line flags."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from vidqueue.errors import ConfigError

EngineKind = Literal["emulator", "kling", "gmi", "diffusers"]
Family = Literal[
    "wan2.1-t2v",
    "wan2.1-i2v",
    "wan2.2-ti2v",
    "wan2.2-t2v",
    "wan2.2-i2v",
    "ltx-video",
    "hunyuanvideo-1.5-t2v",
    "hunyuanvideo-1.5-i2v",
]
Dtype = Literal["float32", "float16", "bfloat16"]
AspectRatio = Literal["16:9", "9:16", "1:1"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmulatorSettings(_Section):
    """The emulator engine: extra simulated time and injected failures."""

    latency_s: float = Field(0.0, ge=0, le=3600)
    failure_rate: float = Field(0.0, ge=0, le=1)
    journal: Path | None = None  # a file that gets one JSON line per generation start and end (an audit)


class UpstreamSettings(_Section):
    """An upstream provider's engine: where it is, how many tasks run there at once, how long to wait and retry."""

    base_url: str
    # Kling accounts cap tasks running in parallel; this caps requests in flight across every worker.
    concurrency: int = Field(4, ge=1, le=1000)
    request_timeout_s: float = Field(30.0, gt=0)
    poll_interval_s: float = Field(3.0, gt=0)
    max_poll_interval_s: float = Field(20.0, gt=0)
    retry_backoff_s: float = Field(1.0, gt=0)  # the first wait after a transient error; doubles up to 30 s
    retry_deadline_s: float = Field(900.0, gt=0)  # how long transient errors are retried before giving up
    max_wait_s: float = Field(2 * 3600.0, gt=0)  # a task not finished by then fails upstream_timeout
    download_timeout_s: float = Field(600.0, gt=0)
    max_video_bytes: int = Field(1024 * 1024 * 1024, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


class KlingSettings(UpstreamSettings):
    """Kling's official API."""

    base_url: str = "https://api-singapore.klingai.com"


class GmiSettings(UpstreamSettings):
    """GMI Cloud's request queue."""

    base_url: str = "https://console.gmicloud.ai"


# diffusers' attention backends are named by this pattern ("native", "flash", "_native_cudnn", "sage", …); the
# worker checks the name against diffusers' own list when it loads (the API process never imports diffusers).
_BACKEND_NAME = r"^_?[a-z][a-z0-9_]*$"
_CLASS_NAME = r"^[A-Z][A-Za-z0-9]*$"
CacheKind = Literal["first_block", "taylorseer", "mag"]


class DiffusersSettings(_Section):
    """Defaults of every model the diffusers engine runs (a [models."ID"] table overrides them per model)."""

    device: str | None = None  # default: cuda when there is a GPU, else cpu
    dtype: Dtype = "bfloat16"
    max_resident: int = Field(1, ge=1, le=16)  # pipelines kept loaded per worker; the least recently used goes
    cpu_offload: bool = False  # model CPU offload: less GPU memory, slower
    vae_tiling: bool = False  # decode in tiles: less memory for large frames
    # Regional compile of the transformer's repeated blocks, warmed up at load; None: on for a GPU, off on a CPU.
    compile: bool | None = None
    attention_backend: str | None = Field(None, pattern=_BACKEND_NAME)  # unset: PyTorch's own choice
    # The host work of a video (MP4 encode, thumbnail, upload) runs while the GPU starts the next request.
    overlap: bool = True


class LoraSettings(_Section):
    """One LoRA adapter, fused into the model's weights at load."""

    path: str = Field(min_length=1)  # a local .safetensors file, a folder holding one, or a hub id
    scale: float = Field(1.0, ge=-10, le=10)
    weight_name: str | None = None  # the file inside a folder or hub repository, when it holds several
    # Which transformer it adapts: the first, the second (Wan 2.2 A14B's low-noise expert), or both.
    target: Literal["transformer", "transformer_2", "both"] = "transformer"


class CacheSettings(_Section):
    """A diffusers cache hook: skips transformer work between similar steps (lossy, faster)."""

    model_config = ConfigDict(extra="allow")  # other keys go to the diffusers config class as they are

    kind: CacheKind
    threshold: float | None = Field(None, gt=0, le=10)

    def options(self) -> dict[str, Any]:
        """The keyword arguments of the diffusers config class (``threshold`` and any other key given)."""
        extra = dict(self.model_extra or {})
        if self.threshold is not None:
            extra["threshold"] = self.threshold
        return extra


def _size(value: Any) -> tuple[int, int]:
    """A frame size from "832x480" (or [832, 480], as the settings travel to workers as JSON)."""
    if isinstance(value, str):
        width, sep, height = value.lower().partition("x")
        if not sep or not width.strip().isdigit() or not height.strip().isdigit():
            raise ValueError(f"{value!r} is not a size like '832x480'")
        value = (int(width), int(height))
    if not isinstance(value, list | tuple) or len(value) != 2 or not all(isinstance(v, int) for v in value):
        raise ValueError("must be a size like '832x480'")
    if not all(16 <= v <= 4096 for v in value):
        raise ValueError("width and height must be between 16 and 4096")
    return int(value[0]), int(value[1])


Size = Annotated[tuple[int, int], BeforeValidator(_size)]


class EnginesSettings(_Section):
    """Per-engine settings."""

    emulator: EmulatorSettings = EmulatorSettings()
    kling: KlingSettings = KlingSettings()
    gmi: GmiSettings = GmiSettings()
    diffusers: DiffusersSettings = DiffusersSettings()


class WorkerSettings(_Section):
    """Lease, heartbeat and polling of the worker processes, and which engines a worker runs."""

    lease_s: float = Field(60.0, gt=0)
    heartbeat_s: float = Field(10.0, gt=0)
    poll_interval_s: float = Field(0.5, gt=0)
    progress_interval_s: float = Field(1.0, ge=0)
    max_attempts: int = Field(2, ge=1)
    sweep_interval_s: float = Field(5.0, gt=0)
    engines: list[EngineKind] | None = None  # only these engines' models (`vidqueue worker --engine`); None: all
    # On SIGTERM a worker claims nothing more and lets running requests finish this long; then it hands them back.
    shutdown_grace_s: float = Field(30.0, ge=0, le=24 * 3600)
    # A generated video whose media cannot be stored (a read-only folder, a full disk, S3 down) is kept, with its
    # lease, and stored again with backoff for this long; then the request fails with storage_unavailable.
    storage_retry_s: float = Field(600.0, ge=0)
    # Out of space while generating: the request goes back to the queue and this worker pauses claims, doubling
    # from 1 s up to this.
    disk_full_backoff_max_s: float = Field(60.0, gt=0)


class LimitsSettings(_Section):
    """Admission limits, counted in the store so they hold across API processes; None or 0: no limit."""

    # Submits per organisation in any 60 s; the check reads that many of its newest rows, hence the ceiling.
    requests_per_minute: int | None = Field(None, ge=0, le=10_000)
    max_active_per_org: int | None = Field(None, ge=0)  # an organisation's queued + processing requests
    max_queued: int | None = Field(None, ge=0)  # queued requests of every organisation together
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0)  # a 10 MB image as base64, and the rest of the body
    # Status streams an organisation may hold open on one API process: each is a connection and a coroutine.
    max_streams_per_org: int = Field(100, ge=0)


class ImageSettings(_Section):
    """Input images: fetch limits."""

    fetch_timeout_s: float = Field(10.0, gt=0)
    max_bytes: int = Field(10 * 1024 * 1024, gt=0)


class WebhookSettings(_Section):
    """Webhook deliveries: how long to wait for a receiver, how to back off, when to give up."""

    timeout_s: float = Field(10.0, gt=0, le=300)
    retry_base_s: float = Field(5.0, gt=0)  # the first retry's wait; doubles per attempt
    max_retry_interval_s: float = Field(3600.0, gt=0)
    max_age_s: float = Field(24 * 3600.0, gt=0)  # a delivery still failing this long after its change gives up
    concurrency: int = Field(8, ge=1, le=256)  # deliveries in flight per API process
    # ... and per organisation within those, so slow receivers of one organisation never take every slot.
    per_org_concurrency: int = Field(2, ge=1, le=256)
    poll_interval_s: float = Field(0.5, gt=0)


class RetentionSettings(_Section):
    """How long finished requests and their media are kept, and how often the job that deletes them runs."""

    days: float = Field(30.0, gt=0)  # fractions are fine: 0.5 keeps them 12 h
    interval_s: float = Field(3600.0, gt=0)  # between passes; each `vidqueue serve` runs one at start
    batch: int = Field(500, ge=1, le=100_000)  # rows deleted per transaction

    @property
    def max_age_s(self) -> float:
        """The retention period in seconds."""
        return self.days * 86400


class ModelRoute(_Section):
    """Which engine serves a model, and for a local (diffusers) model its family, weights and settings."""

    engine: EngineKind | None = None  # default: diffusers when a family is given, else default_engine
    family: Family | None = None
    weights: str | None = None  # a hub id ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers") or a local folder
    steps: int | None = Field(None, ge=1, le=200)  # default num_inference_steps
    fps: int | None = Field(None, ge=1, le=120)
    sizes: dict[AspectRatio, Size] | None = None
    device: str | None = None
    dtype: Dtype | None = None
    cpu_offload: bool | None = None
    vae_tiling: bool | None = None
    compile: bool | None = None
    attention_backend: str | None = Field(None, pattern=_BACKEND_NAME)
    # Few-step and cached modes, all opt-in and per model.
    lora: list[LoraSettings] = Field(default_factory=list, max_length=8)
    scheduler: str | None = Field(None, pattern=_CLASS_NAME)  # a diffusers scheduler class, from the model's config
    scheduler_options: dict[str, float | int | bool | str] = Field(default_factory=dict)
    guidance: float | None = Field(None, ge=0, le=50)  # fixes the guidance scale; 1.0: one pass per step
    max_steps: int | None = Field(None, ge=1, le=200)  # the largest num_inference_steps a request may ask for
    cache: CacheSettings | None = None

    @model_validator(mode="after")
    def _steps_within_max(self) -> ModelRoute:
        if self.steps is not None and self.max_steps is not None and self.steps > self.max_steps:
            raise ValueError(f"steps ({self.steps}) must not exceed max_steps ({self.max_steps})")
        return self


class Settings(_Section):
    """Everything vidqueue reads at start."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    data_dir: Path = Path("./vidqueue-data")
    workers: int = Field(2, ge=0, le=256)
    database_url: str | None = None
    # Where media live: "s3://bucket/prefix" for S3-compatible storage shared by every machine, or a folder;
    # default: the data dir's media folder, served by the API itself.
    storage: str | None = None
    s3_endpoint_url: str | None = None  # an S3-compatible server (MinIO, Ceph, R2); default: AWS
    s3_public_endpoint_url: str | None = None  # where clients reach it, when not where the workers do
    public_url: str | None = None
    media_url_ttl_s: int = Field(24 * 3600, gt=0)
    allow_private_urls: bool = False
    cancel_wait_s: float = Field(5.0, ge=0)
    # On SIGTERM the API answers submits 503 and /readyz 503 this long (so load balancers drain it) before closing.
    drain_s: float = Field(3.0, ge=0, le=600)
    # A request's head (request line and headers) larger than this gets 431; one not complete this long after its
    # first byte (or after the connection opens) gets 408 and the connection is closed.
    max_header_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    header_timeout_s: float = Field(10.0, gt=0, le=3600)
    # HTTPS: a PEM certificate (chain) and its private key; with them `serve` speaks TLS and media URLs are https.
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    # A status stream (SSE) sends a comment this often when nothing changes, so proxies keep it open.
    sse_keepalive_s: float = Field(15.0, gt=0, le=3600)
    log_level: str = "info"
    # FastAPI's own OpenTelemetry spans and metrics, for a process that configures a provider. Off, no request pays
    # to look for one (a twentieth of a submit: the check reads os.environ on every call); /metrics is separate.
    otel: bool = False
    engines: EnginesSettings = EnginesSettings()
    worker: WorkerSettings = WorkerSettings()
    images: ImageSettings = ImageSettings()
    limits: LimitsSettings = LimitsSettings()
    retention: RetentionSettings = RetentionSettings()
    webhooks: WebhookSettings = WebhookSettings()
    models: dict[str, ModelRoute] = {}
    # The engine of models with no [models."ID"] table; unset, it follows the credentials in the environment.
    default_engine: EngineKind | None = None

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, v: str | None) -> str | None:
        return v.rstrip("/") if v else v

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together: set both for HTTPS, or neither")
        return self

    @property
    def tls(self) -> bool:
        """Whether the API serves HTTPS."""
        return self.ssl_certfile is not None

    @property
    def db_url(self) -> str:
        """The SQLAlchemy URL of the store (SQLite in the data dir unless a database URL is set)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'vidqueue.db').resolve()}"

    @property
    def base_url(self) -> str:
        """The absolute URL clients reach this server at; media URLs start with it."""
        if self.public_url:
            return self.public_url
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def engine_for(self, model_id: str, serves: Collection[str] = ("emulator", "kling", "gmi")) -> EngineKind:
        """The engine of a model: its route's, diffusers for a declared family, else the default if it ``serves``."""
        route = self.models.get(model_id)
        if route is not None and route.engine is not None:
            return route.engine
        if route is not None and route.family is not None:
            return "diffusers"
        if self.default_engine is not None and self.default_engine in serves:
            return self.default_engine
        return "emulator"


# Environment variables that name a nested setting directly (VIDQUEUE_<NAME>).
_ENV_PATHS: dict[str, tuple[str, ...]] = {
    "HOST": ("host",),
    "PORT": ("port",),
    "DATA_DIR": ("data_dir",),
    "WORKERS": ("workers",),
    "DATABASE_URL": ("database_url",),
    "STORAGE": ("storage",),
    "S3_ENDPOINT_URL": ("s3_endpoint_url",),
    "S3_PUBLIC_ENDPOINT_URL": ("s3_public_endpoint_url",),
    "PUBLIC_URL": ("public_url",),
    "MEDIA_URL_TTL_S": ("media_url_ttl_s",),
    "ALLOW_PRIVATE_URLS": ("allow_private_urls",),
    "CANCEL_WAIT_S": ("cancel_wait_s",),
    "DRAIN_S": ("drain_s",),
    "MAX_HEADER_BYTES": ("max_header_bytes",),
    "HEADER_TIMEOUT_S": ("header_timeout_s",),
    "SSL_CERTFILE": ("ssl_certfile",),
    "SSL_KEYFILE": ("ssl_keyfile",),
    "SSE_KEEPALIVE_S": ("sse_keepalive_s",),
    "LOG_LEVEL": ("log_level",),
    "OTEL": ("otel",),
    "EMULATOR_LATENCY_S": ("engines", "emulator", "latency_s"),
    "EMULATOR_FAILURE_RATE": ("engines", "emulator", "failure_rate"),
    "EMULATOR_JOURNAL": ("engines", "emulator", "journal"),
    "STORAGE_RETRY_S": ("worker", "storage_retry_s"),
    "DISK_FULL_BACKOFF_MAX_S": ("worker", "disk_full_backoff_max_s"),
    "LEASE_S": ("worker", "lease_s"),
    "HEARTBEAT_S": ("worker", "heartbeat_s"),
    "POLL_INTERVAL_S": ("worker", "poll_interval_s"),
    "PROGRESS_INTERVAL_S": ("worker", "progress_interval_s"),
    "MAX_ATTEMPTS": ("worker", "max_attempts"),
    "SWEEP_INTERVAL_S": ("worker", "sweep_interval_s"),
    "SHUTDOWN_GRACE_S": ("worker", "shutdown_grace_s"),
    "IMAGE_FETCH_TIMEOUT_S": ("images", "fetch_timeout_s"),
    "IMAGE_MAX_BYTES": ("images", "max_bytes"),
    "REQUESTS_PER_MINUTE": ("limits", "requests_per_minute"),
    "MAX_ACTIVE_PER_ORG": ("limits", "max_active_per_org"),
    "MAX_QUEUED": ("limits", "max_queued"),
    "MAX_BODY_BYTES": ("limits", "max_body_bytes"),
    "MAX_STREAMS_PER_ORG": ("limits", "max_streams_per_org"),
    "DEFAULT_ENGINE": ("default_engine",),
    "RETENTION_DAYS": ("retention", "days"),
    "RETENTION_INTERVAL_S": ("retention", "interval_s"),
    "RETENTION_BATCH": ("retention", "batch"),
    "WEBHOOK_TIMEOUT_S": ("webhooks", "timeout_s"),
    "WEBHOOK_RETRY_BASE_S": ("webhooks", "retry_base_s"),
    "WEBHOOK_MAX_RETRY_INTERVAL_S": ("webhooks", "max_retry_interval_s"),
    "WEBHOOK_MAX_AGE_S": ("webhooks", "max_age_s"),
    "WEBHOOK_POLL_INTERVAL_S": ("webhooks", "poll_interval_s"),
    "WEBHOOK_CONCURRENCY": ("webhooks", "concurrency"),
    "WEBHOOK_PER_ORG_CONCURRENCY": ("webhooks", "per_org_concurrency"),
    "KLING_BASE_URL": ("engines", "kling", "base_url"),
    "KLING_CONCURRENCY": ("engines", "kling", "concurrency"),
    "GMI_BASE_URL": ("engines", "gmi", "base_url"),
    "GMI_CONCURRENCY": ("engines", "gmi", "concurrency"),
    "DEVICE": ("engines", "diffusers", "device"),
    "DTYPE": ("engines", "diffusers", "dtype"),
}


@dataclass(frozen=True)
class Credentials:
    """Upstream credentials, read from the environment only (never from a file or the command line)."""

    kling_access_key: str | None = None
    kling_secret_key: str | None = None
    gmi_api_key: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Credentials:
        """KLING_ACCESS_KEY, KLING_SECRET_KEY and GMI_API_KEY; empty values count as unset."""
        env = os.environ if env is None else env
        return cls(
            kling_access_key=env.get("KLING_ACCESS_KEY") or None,
            kling_secret_key=env.get("KLING_SECRET_KEY") or None,
            gmi_api_key=env.get("GMI_API_KEY") or None,
        )

    @property
    def kling(self) -> bool:
        """Whether both Kling keys are set."""
        return bool(self.kling_access_key and self.kling_secret_key)

    def default_engine(self) -> EngineKind:
        """kling when Kling keys are set, else gmi when a GMI key is, else the emulator."""
        if self.kling:
            return "kling"
        return "gmi" if self.gmi_api_key else "emulator"


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for i, part in enumerate(path[:-1]):
        tree = tree.setdefault(part, {})
        if not isinstance(tree, dict):
            raise ConfigError(f"Invalid settings: {'.'.join(path[: i + 1])} must be a table, not a single value.")
    tree[path[-1]] = value


def load_settings(
    config_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the settings: the TOML file, then VIDQUEUE_* variables, then explicit overrides (flags)."""
    env = os.environ if env is None else env
    tree: dict[str, Any] = {}
    path = config_path or (Path(env["VIDQUEUE_CONFIG"]) if env.get("VIDQUEUE_CONFIG") else None)
    if path is not None:
        try:
            tree = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"Config file {path} does not exist.") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"Config file {path} is not valid TOML: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"Config file {path} is not UTF-8 text.") from exc
        except OSError as exc:
            raise ConfigError(f"Config file {path} cannot be read: {exc.strerror or exc}.") from exc
    for name, dotted in _ENV_PATHS.items():
        raw = env.get(f"VIDQUEUE_{name}")
        if raw is not None and raw != "":
            _set_path(tree, dotted, raw)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_path(tree, tuple(key.split(".")), value)
    tree.setdefault("default_engine", Credentials.from_env(env).default_engine())
    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"Invalid settings: {problems}") from exc
