"""A fake of Kling's legacy v1 video API (text2video, image2video), shaped by its public docs (UPSTREAMS.md)."""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import secrets
import time
import uuid
from typing import Any, ClassVar, NoReturn

import jwt
from jwt.algorithms import HMACAlgorithm
from PIL import Image, UnidentifiedImageError

from tests.fakes.base import Action, FakeUpstream, Fault, Rejected, Reply, Request, Route, int_param

MODELS = frozenset({"kling-v1", "kling-v1-6", "kling-v2-master", "kling-v2-1-master", "kling-v2-5-turbo"})
KINDS = ("text2video", "image2video")
_COMMON_FIELDS = {"model_name", "prompt", "negative_prompt", "cfg_scale", "mode", "camera_control", "duration"}
_COMMON_FIELDS |= {"callback_url", "external_task_id"}
FIELDS: dict[str, frozenset[str]] = {
    "text2video": frozenset(_COMMON_FIELDS | {"aspect_ratio"}),
    "image2video": frozenset(_COMMON_FIELDS | {"image", "image_tail", "static_mask", "dynamic_masks"}),
}
_CAMERA_TYPES = {"simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward"}
_CAMERA_AXES = ("horizontal", "vertical", "pan", "tilt", "roll", "zoom")
_MAX_IMAGE_BYTES = 10 * 1024 * 1024
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_PATH = re.compile(r"^/v1/videos/(text2video|image2video)(?:/([^/]+))?$")

# The lifetime a well-built token has (exp = now + 1800, nbf = now - 5 gives 1805 s), with some slack.
_MIN_LIFETIME_S, _MAX_LIFETIME_S = 1700, 1900


class _AnyLengthHMAC(HMACAlgorithm):
    """HMAC without PyJWT's short-key warning: test keys like "sk-test" are short, and pytest makes warnings errors."""

    def check_key_length(self, key: bytes) -> str | None:
        return None


def _hs256_only() -> jwt.PyJWS:
    jws = jwt.PyJWS(algorithms=["HS256"])
    jws.unregister_algorithm("HS256")
    jws.register_algorithm("HS256", _AnyLengthHMAC(HMACAlgorithm.SHA256))
    return jws


_JWS = _hs256_only()


def kling_jwt(
    access_key: str, secret_key: str, *, now: float | None = None, exp_in: float = 1800, nbf_ago: float = 5
) -> str:
    """A Kling API token as the docs build it: HS256, iss = access key, exp = now + 1800 s, nbf = now - 5 s."""
    now = time.time() if now is None else now
    claims = {"iss": access_key, "exp": int(now + exp_in), "nbf": int(now - nbf_ago)}
    return _JWS.encode(json.dumps(claims).encode(), secret_key, algorithm="HS256")


def _ms() -> int:
    return int(time.time() * 1000)


def _envelope(http_status: int, code: int, message: str, data: Any = None) -> Reply:
    return Reply.json(http_status, {"code": code, "message": message, "request_id": str(uuid.uuid4()), "data": data})


def _bad(message: str, code: int = 1201) -> Rejected:
    return Rejected(_envelope(400, code, message))


class KlingFake(FakeUpstream):
    """Kling's v1 video endpoints: JWT auth, strict body checks, tasks that finish after a few queries.

    Use as ``with KlingFake() as fake:``; point the client at ``fake.url``; script trouble with ``fake.inject``.
    """

    success_status: ClassVar[str] = "succeed"
    malformed_body: ClassVar[bytes] = b'{"code": 0, "data": {"task_'

    def __init__(self, access_key: str = "ak-test", secret_key: str = "sk-test") -> None:
        super().__init__()
        self.access_key = access_key
        self.secret_key = secret_key
        self.auth_failures = 0
        self._tokens: set[str] = set()

    @property
    def tokens(self) -> set[str]:
        """Distinct bearer tokens presented on /v1 calls (valid or not)."""
        with self._lock:
            return set(self._tokens)

    def token(self, *, now: float | None = None, exp_in: float = 1800, nbf_ago: float = 5) -> str:
        """A valid token for this fake's keys (see ``kling_jwt``)."""
        return kling_jwt(self.access_key, self.secret_key, now=now, exp_in=exp_in, nbf_ago=nbf_ago)

    # -- routing

    def _route(self, method: str, path: str) -> tuple[Route | None, Action]:
        match = _PATH.match(path)
        if match is None:
            return None, self._not_found
        kind, task_id = match.group(1), match.group(2)
        if method == "POST" and task_id is None:
            return "create", lambda request: self._create(request, kind)
        if method == "GET" and task_id is not None:
            return "query", lambda request: self._query(request, kind, task_id)
        if method == "GET":
            return "list", lambda request: self._list(request, kind)
        return None, self._not_found

    def _fault_reply(self, fault: Fault) -> Reply:
        if fault.code is None:
            return Reply.text(fault.http_status, fault.message)
        return _envelope(fault.http_status, fault.code, fault.message)

    def _not_found(self, request: Request) -> Reply:
        if request.path.startswith("/v1/"):
            self._auth(request)
        return _envelope(404, 1202, f"{request.method} {request.path} does not exist")

    # -- auth

    def _auth(self, request: Request) -> None:
        header = request.headers.get("authorization", "").strip()
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if token:
            with self._lock:
                self._tokens.add(token)
        if not header or (scheme.lower() == "bearer" and not token):
            self._deny(1001, "Authorization header is missing or empty")
        if scheme.lower() != "bearer":
            self._deny(1002, "Authorization header must be 'Bearer <token>'")
        try:
            # The signature and algorithm first (HS256 only), then the claims, with no leeway at all.
            _JWS.decode_complete(token, key=self.secret_key, algorithms=["HS256"])
            claims = jwt.decode(
                token,
                options={
                    "verify_signature": False,
                    "verify_exp": True,
                    "verify_nbf": True,
                    "verify_iat": True,
                    "verify_iss": True,
                    "require": ["iss", "exp", "nbf"],
                },
                issuer=self.access_key,
                leeway=0,
            )
        except jwt.ExpiredSignatureError:
            self._deny(1004, "Auth failed: token expired")
        except jwt.ImmatureSignatureError:
            self._deny(1003, "Auth failed: token not yet valid")
        except jwt.PyJWTError as exc:
            self._deny(1002, f"Auth failed: invalid token ({exc})")
        lifetime = claims["exp"] - claims["nbf"]
        if not _MIN_LIFETIME_S <= lifetime <= _MAX_LIFETIME_S:
            self._deny(1002, f"Auth failed: token lifetime exp - nbf = {lifetime} s is out of range")

    def _deny(self, code: int, message: str) -> NoReturn:
        with self._lock:
            self.auth_failures += 1
        raise Rejected(_envelope(401, code, message))

    # -- actions

    def _create(self, request: Request, kind: str) -> Reply:
        self._auth(request)
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            raise _bad("request body is not valid JSON", code=1200) from None
        if not isinstance(body, dict):
            raise _bad("request body must be a JSON object", code=1200)
        _validate(kind, body)
        if "forbidden" in str(body.get("prompt", "")).lower():
            raise _bad("Content security policy triggered", code=1301)
        external_task_id = body.get("external_task_id")
        with self._lock:
            if external_task_id is not None and any(
                t["external_task_id"] == external_task_id for t in self._tasks.values()
            ):
                raise _bad("external_task_id already exists")
            now = _ms()
            task_id = f"{secrets.randbelow(10**12):012d}{self._seq + 1:06d}"  # Kling ids are long digit strings
            task = {
                "task_id": task_id,
                "kind": kind,
                "status": "submitted",
                "status_msg": "",
                "external_task_id": external_task_id,
                "body": body,
                "created_at": now,
                "updated_at": now,
            }
            self._add_task(task_id, task)
            data = {
                "task_id": task_id,
                "task_status": "submitted",
                "task_info": {"external_task_id": external_task_id},
                "created_at": now,
                "updated_at": now,
            }
        return _envelope(200, 0, "SUCCEED", data)

    def _find(self, kind: str, task_id: str) -> dict[str, Any]:
        task = self._tasks.get(task_id) or next(
            (t for t in self._tasks.values() if t["external_task_id"] == task_id), None
        )
        if task is None or task["kind"] != kind:
            raise Rejected(_envelope(404, 1203, "task does not exist"))
        return task

    def _query(self, request: Request, kind: str, task_id: str) -> Reply:
        self._auth(request)
        with self._lock:
            task = self._find(kind, task_id)
            if self._advance(task):
                task["updated_at"] = _ms()
            data = self._task_data(task)
        return _envelope(200, 0, "SUCCEED", data)

    def _list(self, request: Request, kind: str) -> Reply:
        self._auth(request)
        page = int_param(request, "pageNum", 1, 1, 1000, _bad)
        size = int_param(request, "pageSize", 30, 1, 500, _bad)
        with self._lock:
            tasks = sorted((t for t in self._tasks.values() if t["kind"] == kind), key=lambda t: -t["seq"])
            data = [self._task_data(t) for t in tasks[(page - 1) * size : page * size]]
        return _envelope(200, 0, "SUCCEED", data)

    def _task_data(self, task: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = {
            "task_id": task["task_id"],
            "task_status": task["status"],
            "task_status_msg": task["status_msg"],
            "task_info": {"external_task_id": task["external_task_id"]},
            "created_at": task["created_at"],
            "updated_at": task["updated_at"],
        }
        if task["status"] == "succeed":
            videos = [
                {"id": f"{task['task_id']}-{n}", "url": self._result_url(task["task_id"], n), "duration": "1"}
                for n in range(task["videos"])
            ]
            data["task_result"] = {"videos": videos}
        return data


def _validate(kind: str, body: dict[str, Any]) -> None:
    """Reject (HTTP 400, code 1201, naming the field) anything the docs do not allow in a create body."""
    for name in body:
        if name not in FIELDS[kind]:
            raise _bad(f"{name} is not a supported parameter of {kind}")
    model = body.get("model_name", "kling-v1")
    if model not in MODELS:
        raise _bad(f"model_name {model!r} is not supported")
    if kind == "text2video" and not body.get("prompt"):
        raise _bad("prompt is required")
    for name in ("prompt", "negative_prompt"):
        if name in body and (not isinstance(body[name], str) or len(body[name]) > 2500):
            raise _bad(f"{name} must be a string of at most 2500 characters")
    if "cfg_scale" in body:
        cfg = body["cfg_scale"]
        if isinstance(cfg, bool) or not isinstance(cfg, int | float) or not 0 <= cfg <= 1:
            raise _bad("cfg_scale must be a number between 0 and 1")
    _check_option(body, "mode", ("std", "pro"))
    _check_option(body, "aspect_ratio", ("16:9", "9:16", "1:1"))
    _check_option(body, "duration", ("5", "10"))
    for name in ("callback_url", "external_task_id"):
        if name in body and (not isinstance(body[name], str) or not body[name]):
            raise _bad(f"{name} must be a non-empty string")
    if "camera_control" in body:
        _check_camera(body["camera_control"])
    if kind == "image2video":
        if "image" not in body:
            raise _bad("image is required")
        for name in ("image", "image_tail"):
            if name in body:
                _check_image(name, body[name])
        if "static_mask" in body and not isinstance(body["static_mask"], str):
            raise _bad("static_mask must be a string")
        if "dynamic_masks" in body and (not isinstance(body["dynamic_masks"], list) or len(body["dynamic_masks"]) > 6):
            raise _bad("dynamic_masks must be a list of at most 6 entries")
        groups = [
            name
            for name, present in (
                ("image_tail", "image_tail" in body),
                ("static_mask/dynamic_masks", "static_mask" in body or "dynamic_masks" in body),
                ("camera_control", "camera_control" in body),
            )
            if present
        ]
        if len(groups) > 1:
            raise _bad(f"{' and '.join(groups)} cannot be used together")


def _check_option(body: dict[str, Any], name: str, options: tuple[str, ...]) -> None:
    if name in body and body[name] not in options:
        allowed = ", ".join(f'"{o}"' for o in options)
        raise _bad(f"{name} must be one of the strings {allowed}, got {json.dumps(body[name])}")


def _check_camera(camera: Any) -> None:
    if not isinstance(camera, dict) or camera.get("type") not in _CAMERA_TYPES:
        raise _bad(f"camera_control.type must be one of {sorted(_CAMERA_TYPES)}")
    config = camera.get("config")
    if camera["type"] != "simple":
        if config is not None:
            raise _bad("camera_control.config is only allowed with type simple")
        return
    if not isinstance(config, dict) or set(config) - set(_CAMERA_AXES):
        raise _bad(f"camera_control.config must be an object with keys among {list(_CAMERA_AXES)}")
    values = list(config.values())
    if any(isinstance(v, bool) or not isinstance(v, int | float) or not -10 <= v <= 10 for v in values):
        raise _bad("camera_control.config values must be numbers between -10 and 10")
    if sum(1 for v in values if v != 0) != 1:
        raise _bad("camera_control.config must have exactly one non-zero value")


def _check_image(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise _bad(f"{name} must be a non-empty string")
    if value.startswith("data:"):
        raise _bad(f"{name} must be raw base64 without a data: prefix")
    if value.startswith(("http://", "https://")):
        return  # the docs allow a URL; the fake does not fetch it
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{name} is neither a URL nor valid base64") from None
    if not data.startswith((_PNG_MAGIC, _JPEG_MAGIC)):
        raise _bad(f"{name} must be a PNG or JPEG image")
    if len(data) > _MAX_IMAGE_BYTES:
        raise _bad(f"{name} must be at most 10 MB")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except (UnidentifiedImageError, OSError):
        raise _bad(f"{name} is not a readable image") from None
    if min(width, height) < 300:
        raise _bad(f"{name} must be at least 300 px on each side, got {width}x{height}")
    if not 1 / 2.5 <= width / height <= 2.5:
        raise _bad(f"{name} aspect ratio must be between 1:2.5 and 2.5:1, got {width}x{height}")
