"""The kling and gmi engines driven directly (no vidqueue server), against the fake upstreams on loopback.

Each test starts its own fake, so faults it injects and knobs it turns never reach another test.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from PIL import Image

from tests.cases import MASTER, PROMPT, TURBO
from tests.fakes import Fault, GmiFake, KlingFake
from tests.fakes.base import VIDEO_HEIGHT, VIDEO_WIDTH
from vidqueue.config import GmiSettings, KlingSettings
from vidqueue.engines.base import GeneratedMedia, Job
from vidqueue.engines.gmi import GmiEngine
from vidqueue.engines.kling import MODEL_NAMES, KlingAuth, KlingEngine, classify
from vidqueue.engines.upstream import Transient, UpstreamEngine
from vidqueue.errors import JobCancelled, JobFailed

ACCESS_KEY = "ak-unit-test"
SECRET_KEY = "sk-unit-test-0123456789abcdef0123456789"  # 32+ bytes: PyJWT warns on shorter HMAC keys
GMI_KEY = "gmi-unit-test"
T2V = "/v1/videos/text2video"
I2V = "/v1/videos/image2video"

FAST: dict[str, Any] = {
    "poll_interval_s": 0.01,
    "max_poll_interval_s": 0.02,
    "retry_backoff_s": 0.01,
    "retry_deadline_s": 0.5,
    "request_timeout_s": 0.5,
    "max_wait_s": 5,
}


class Ctx:
    """A JobContext that records what the engine reports, with a cancel flag the test (or a hook) can flip."""

    def __init__(
        self,
        workdir: Path,
        resume_state: dict[str, Any] | None = None,
        *,
        on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
        cancel_on_progress: bool = False,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.resume_state = resume_state
        self.fractions: list[float] = []
        self.states: list[dict[str, Any]] = []
        self.cancel = False
        self._on_checkpoint = on_checkpoint
        self._cancel_on_progress = cancel_on_progress

    def progress(self, fraction: float) -> None:
        self.fractions.append(fraction)
        if self._cancel_on_progress:
            self.cancel = True

    def cancelled(self) -> bool:
        return self.cancel

    def checkpoint(self, state: dict[str, Any]) -> None:
        self.states.append(copy.deepcopy(state))
        self.resume_state = copy.deepcopy(state)
        if self._on_checkpoint is not None:
            self._on_checkpoint(state)

    def stage_done(self) -> None:
        pass


def job(model: str = MASTER, *, payload: dict[str, Any] | None = None, image: bytes | None = None) -> Job:
    """A job with a fresh request id and the payload the catalog would have filled in."""
    if payload is None:
        payload = {"prompt": f"{PROMPT} #{uuid.uuid4().hex[:8]}", "negative_prompt": "", "duration": "5"}
        payload |= {"aspect_ratio": "16:9", "cfg_scale": 0.5} if model == MASTER else {"mode": "pro", "cfg_scale": 0.5}
    return Job(request_id=f"req-{uuid.uuid4().hex}", org_id="org-a", model=model, payload=payload, input_image=image)


def generate(engine: UpstreamEngine, j: Job, ctx: Ctx) -> GeneratedMedia:
    """Run one attempt on a fresh event loop, closing the engine's client on that loop."""

    async def go() -> GeneratedMedia:
        try:
            return await engine.generate(j, ctx)
        finally:
            await engine.aclose()

    return asyncio.run(go())


def failure(engine: UpstreamEngine, j: Job, ctx: Ctx, expected: type[JobFailed] = JobFailed) -> JobFailed:
    with pytest.raises(expected) as caught:
        generate(engine, j, ctx)
    return caught.value


def png(width: int = 400, height: int = 320) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture()
def kling() -> Iterator[KlingFake]:
    with KlingFake(ACCESS_KEY, SECRET_KEY) as fake:
        yield fake
    assert fake.errors == []


@pytest.fixture()
def gmi() -> Iterator[GmiFake]:
    with GmiFake(GMI_KEY) as fake:
        yield fake
    assert fake.errors == []


def kling_engine(fake: KlingFake, *, secret_key: str = SECRET_KEY, **settings: Any) -> KlingEngine:
    return KlingEngine(
        {TURBO, MASTER},
        KlingSettings(base_url=fake.url, **(FAST | settings)),
        ACCESS_KEY,
        secret_key,
        allow_private_urls=True,
    )


def gmi_engine(fake: GmiFake, *, api_key: str = GMI_KEY, **settings: Any) -> GmiEngine:
    return GmiEngine(
        {TURBO, MASTER}, GmiSettings(base_url=fake.url, **(FAST | settings)), api_key, allow_private_urls=True
    )


def create_directly(fake: KlingFake, j: Job) -> str:
    """Make the task for ``j`` at the fake as an earlier attempt would have; answer its id."""
    headers = {"Authorization": f"Bearer {fake.token()}"}
    body = KlingEngine.body(j)
    answer = httpx.post(fake.url + KlingEngine.endpoint(j), json=body, headers=headers, timeout=5).json()
    assert answer["code"] == 0
    return str(answer["data"]["task_id"])


# -- KlingAuth -------------------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def decode(header: str) -> dict[str, Any]:
    scheme, _, token = header.partition(" ")
    assert scheme == "Bearer"
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims: dict[str, Any] = jwt.decode(
        token, SECRET_KEY, algorithms=["HS256"], options={"verify_exp": False, "verify_nbf": False}
    )
    return claims


def test_kling_token_is_hs256_with_the_documented_claims() -> None:
    clock = Clock(1_700_000_000.0)
    claims = decode(KlingAuth(ACCESS_KEY, SECRET_KEY, clock=clock).header())
    assert claims == {"iss": ACCESS_KEY, "exp": 1_700_000_000 + 1800, "nbf": 1_700_000_000 - 5}


def test_kling_token_is_valid_now_for_pyjwt_with_the_real_clock() -> None:
    token = KlingAuth(ACCESS_KEY, SECRET_KEY).header().removeprefix("Bearer ")
    claims = jwt.decode(token, SECRET_KEY, algorithms=["HS256"], issuer=ACCESS_KEY)
    assert claims["exp"] - claims["nbf"] == 1805


def test_kling_token_is_reused_while_fresh_and_renewed_with_less_than_300_s_left() -> None:
    start = 1_700_000_000.0
    clock = Clock(start)
    auth = KlingAuth(ACCESS_KEY, SECRET_KEY, clock=clock)
    first = auth.header()
    clock.now = start + 1000
    assert auth.header() == first
    clock.now = start + 1499  # 301 s left
    assert auth.header() == first
    clock.now = start + 1501  # 299 s left
    renewed = auth.header()
    assert renewed != first
    assert decode(renewed) == {"iss": ACCESS_KEY, "exp": int(start) + 1501 + 1800, "nbf": int(start) + 1501 - 5}
    clock.now = start + 1600
    assert auth.header() == renewed


# -- Kling's create body ---------------------------------------------------------------------------------------


def test_kling_model_names_map_vidqueue_ids_to_kling_names() -> None:
    assert MODEL_NAMES == {TURBO: "kling-v2-5-turbo", MASTER: "kling-v2-master"}
    assert KlingEngine.body(job(MASTER))["model_name"] == "kling-v2-master"
    assert KlingEngine.body(job(TURBO))["model_name"] == "kling-v2-5-turbo"


def test_kling_text2video_body_carries_the_payload_and_our_request_id() -> None:
    payload = {"prompt": PROMPT, "negative_prompt": "", "duration": 10, "aspect_ratio": "9:16", "cfg_scale": 0.3}
    j = job(MASTER, payload=payload)
    assert KlingEngine.body(j) == {
        "model_name": "kling-v2-master",
        "external_task_id": j.request_id,
        "prompt": PROMPT,
        "duration": "10",  # Kling wants the duration as a string
        "aspect_ratio": "9:16",
        "cfg_scale": 0.3,
    }  # the empty negative_prompt is left out
    assert KlingEngine.endpoint(j) == T2V


def test_kling_negative_prompt_is_sent_when_given() -> None:
    j = job(MASTER, payload={"prompt": PROMPT, "negative_prompt": "blur", "duration": "5"})
    assert KlingEngine.body(j)["negative_prompt"] == "blur"


def test_kling_image2video_body_has_raw_base64_image_and_no_aspect_ratio() -> None:
    image = png()
    payload = {"prompt": PROMPT, "image": "https://example.com/in.png", "aspect_ratio": "9:16", "mode": "pro"}
    j = job(TURBO, payload=payload, image=image)
    body = KlingEngine.body(j)
    assert body["image"] == base64.b64encode(image).decode("ascii")
    assert not body["image"].startswith("data:")
    assert "aspect_ratio" not in body
    assert body["mode"] == "pro" and body["external_task_id"] == j.request_id
    assert KlingEngine.endpoint(j) == I2V


# -- Kling's code table ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("http_status", "code"), [(400, 1300), (400, 1301)])
def test_kling_content_policy_codes_are_rejections(http_status: int, code: int) -> None:
    error = classify(http_status, code, "Content security policy triggered", ambiguous=True)
    assert isinstance(error, JobFailed) and error.code == "upstream_rejected"
    assert "Content security policy triggered" in error.message


@pytest.mark.parametrize(("http_status", "code"), [(429, 1302), (429, 1303), (429, None), (200, 1302)])
def test_kling_rate_limits_are_transient_and_never_ambiguous(http_status: int, code: int | None) -> None:
    error = classify(http_status, code, "slow down", ambiguous=True)
    assert isinstance(error, Transient)
    assert error.ambiguous is False  # a rate-limited create was surely not acted on


@pytest.mark.parametrize(("http_status", "code"), [(500, 5000), (503, 5001), (504, 5002), (502, None), (500, None)])
def test_kling_server_errors_are_transient_and_keep_the_call_ambiguity(http_status: int, code: int | None) -> None:
    for ambiguous in (True, False):
        error = classify(http_status, code, "", ambiguous=ambiguous)
        assert isinstance(error, Transient) and error.ambiguous is ambiguous and not error.timeout


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1004])
def test_kling_auth_codes_name_the_credentials(code: int) -> None:
    error = classify(401, code, "Auth failed", ambiguous=False)
    assert isinstance(error, JobFailed) and error.code == "upstream_error"
    assert "KLING_ACCESS_KEY" in error.message and "KLING_SECRET_KEY" in error.message


@pytest.mark.parametrize(
    ("http_status", "code", "message"),
    [
        (400, 1201, "duration must be one of the strings"),
        (429, 1102, "resource pack exhausted"),
        (429, 1304, "IP not in allow-list"),
        (403, 1103, "no access to this model"),
    ],
)
def test_kling_other_codes_fail_with_klings_message(http_status: int, code: int, message: str) -> None:
    error = classify(http_status, code, message, ambiguous=False)
    assert isinstance(error, JobFailed) and error.code == "upstream_error"
    assert message in error.message and str(code) in error.message


def test_kling_client_error_without_a_code_fails() -> None:
    error = classify(418, None, "", ambiguous=False)
    assert isinstance(error, JobFailed) and error.code == "upstream_error" and "418" in error.message


# -- Kling end to end (engine ↔ fake) --------------------------------------------------------------------------


def test_kling_text2video_result_is_copied_into_the_workdir(kling: KlingFake, tmp_path: Path) -> None:
    j = job(MASTER)
    ctx = Ctx(tmp_path)
    media = generate(kling_engine(kling), j, ctx)
    [task_id] = kling.tasks
    task = kling.tasks[task_id]
    assert kling.creates == 1 and task["kind"] == "text2video"
    assert task["body"] == KlingEngine.body(j)
    assert media.extra == {"upstream": {"provider": "kling", "task_id": task_id}}
    assert media.videos == [tmp_path / "video.mp4"]
    assert media.videos[0].read_bytes() == kling.video_bytes(task_id)
    assert (media.info.width, media.info.height) == (VIDEO_WIDTH, VIDEO_HEIGHT)
    assert media.thumbnail is not None and media.thumbnail.is_file()
    assert ctx.fractions[-1] == 1.0 and ctx.fractions == sorted(ctx.fractions)
    assert all(0 <= f <= 1 for f in ctx.fractions)
    # One JWT, made once, accepted by the fake's strict checks.
    assert len(kling.tokens) == 1 and kling.auth_failures == 0


def test_kling_image2video_goes_to_the_image_endpoint(kling: KlingFake, tmp_path: Path) -> None:
    image = png()
    j = job(TURBO, payload={"prompt": PROMPT, "duration": "5", "mode": "std"}, image=image)
    media = generate(kling_engine(kling), j, Ctx(tmp_path))
    [task] = kling.tasks.values()
    assert task["kind"] == "image2video" and task["body"]["image"] == base64.b64encode(image).decode("ascii")
    assert ("GET", f"{I2V}/{media.extra['upstream']['task_id']}") in kling.calls
    assert not any(path.startswith(T2V) for _, path in kling.calls)


def test_kling_checkpoints_creating_then_the_task_id_before_any_poll(kling: KlingFake, tmp_path: Path) -> None:
    seen: list[list[tuple[str, str]]] = []
    ctx = Ctx(tmp_path, on_checkpoint=lambda state: seen.append(kling.calls))
    before = time.time()
    media = generate(kling_engine(kling), job(), ctx)
    task_id = media.extra["upstream"]["task_id"]
    assert len(ctx.states) == 2
    creating, created = ctx.states
    assert creating == {"creating": True, "since": creating["since"]}
    assert before <= creating["since"] <= time.time()
    assert created == {"task_id": task_id, "since": creating["since"]}
    assert seen[0] == []  # the mark is down before the create is sent
    assert seen[1] == [("POST", T2V)]  # the id is down before any poll
    assert kling.calls[1] == ("GET", f"{T2V}/{task_id}")


def test_kling_resume_with_a_task_id_polls_it_and_creates_nothing(kling: KlingFake, tmp_path: Path) -> None:
    j = job()
    task_id = create_directly(kling, j)
    ctx = Ctx(tmp_path, {"task_id": task_id, "since": time.time()})
    media = generate(kling_engine(kling), j, ctx)
    assert media.extra["upstream"]["task_id"] == task_id
    assert kling.creates == 1
    assert ("POST", T2V) not in kling.calls[1:]  # the only create is the test's own
    assert kling.tasks[task_id]["queries"] >= kling.polls_to_finish
    assert ctx.states == []  # nothing new to remember


def test_kling_resume_in_the_creating_mark_finds_the_earlier_task(kling: KlingFake, tmp_path: Path) -> None:
    j = job()
    engine = kling_engine(kling)

    # A first attempt that stops right after its create answered (its task-id checkpoint then "dies").
    def stop_after_create(state: dict[str, Any]) -> None:
        first.cancel = "task_id" in state

    first = Ctx(tmp_path / "1", on_checkpoint=stop_after_create)
    failure(engine, j, first, JobCancelled)
    assert kling.creates == 1
    [task_id] = kling.tasks
    # The next attempt only has the mark (the id checkpoint was lost).
    ctx = Ctx(tmp_path / "2", {"creating": True, "since": first.states[0]["since"]})
    media = generate(engine, j, ctx)
    assert media.extra["upstream"]["task_id"] == task_id
    assert kling.creates == 1
    assert kling.calls.count(("POST", T2V)) == 1
    assert ("GET", f"{T2V}/{j.request_id}") in kling.calls  # looked up by external_task_id
    assert ctx.states[-1]["task_id"] == task_id


def test_kling_resume_in_the_creating_mark_with_no_task_creates_one(kling: KlingFake, tmp_path: Path) -> None:
    j = job()
    ctx = Ctx(tmp_path, {"creating": True, "since": time.time() - 30})
    media = generate(kling_engine(kling), j, ctx)
    assert kling.creates == 1
    assert kling.calls[:2] == [("GET", f"{T2V}/{j.request_id}"), ("POST", T2V)]
    assert media.extra["upstream"]["task_id"] in kling.tasks


def test_kling_lost_create_answer_is_found_not_created_again(kling: KlingFake, tmp_path: Path) -> None:
    kling.inject("create", Fault("reset", after=True))
    j = job()
    media = generate(kling_engine(kling), j, Ctx(tmp_path))
    assert kling.creates == 1 and kling.faults_left("create") == 0
    assert media.extra["upstream"]["task_id"] in kling.tasks
    assert kling.calls[:2] == [("POST", T2V), ("GET", f"{T2V}/{j.request_id}")]


def test_kling_garbled_create_answer_is_found_not_created_again(kling: KlingFake, tmp_path: Path) -> None:
    kling.inject("create", Fault("malformed"))
    j = job()
    generate(kling_engine(kling), j, Ctx(tmp_path))
    # The fake's malformed answer replaces the action, so the lookup finds nothing and one create follows.
    assert kling.creates == 1 and kling.faults_left("create") == 0
    assert kling.calls[:3] == [("POST", T2V), ("GET", f"{T2V}/{j.request_id}"), ("POST", T2V)]


def test_kling_resume_with_a_task_kling_does_not_know_fails(kling: KlingFake, tmp_path: Path) -> None:
    ctx = Ctx(tmp_path, {"task_id": "000000000000000042", "since": time.time()})
    error = failure(kling_engine(kling), job(), ctx)
    assert error.code == "upstream_error" and "000000000000000042" in error.message
    assert kling.creates == 0


def test_kling_rate_limit_on_create_is_retried_without_a_lookup(kling: KlingFake, tmp_path: Path) -> None:
    kling.inject("create", Fault("status", http_status=429, code=1302, message="rate limit exceeded"))
    generate(kling_engine(kling), job(), Ctx(tmp_path))
    assert kling.creates == 1 and kling.faults_left("create") == 0
    assert kling.calls[:2] == [("POST", T2V), ("POST", T2V)]


def test_kling_create_that_keeps_failing_ends_after_the_retry_deadline(kling: KlingFake, tmp_path: Path) -> None:
    # With a 0.2 s deadline and 0.01 s first backoff (doubling), at most ~6 creates fit before it.
    kling.inject("create", *[Fault("status", http_status=500, code=5000, message="internal error")] * 12)
    started = time.monotonic()
    error = failure(kling_engine(kling, retry_deadline_s=0.2), job(), Ctx(tmp_path))
    assert error.code == "upstream_error" and "0.2 s" in error.message
    assert 0.2 <= time.monotonic() - started < 3
    assert kling.creates == 0 and kling.faults_left("create") > 0
    # Each create that 5000'd may have happened, so it was looked for before the next one.
    posts = [i for i, call in enumerate(kling.calls) if call == ("POST", T2V)]
    assert len(posts) >= 2 and all(kling.calls[i + 1][0] == "GET" for i in posts[:-1])


def test_kling_query_that_keeps_timing_out_ends_upstream_timeout(kling: KlingFake, tmp_path: Path) -> None:
    # Timeouts at ~0.3 s, ~0.61 s, ~0.92 s: the third is past the 0.5 s deadline counted from the first.
    kling.inject("query", *[Fault("delay", seconds=1)] * 3)
    error = failure(kling_engine(kling, request_timeout_s=0.3, retry_deadline_s=0.5), job(), Ctx(tmp_path))
    assert error.code == "upstream_timeout"
    assert kling.faults_left("query") == 0 and kling.creates == 1


def test_kling_task_that_never_finishes_ends_upstream_timeout_naming_it(kling: KlingFake, tmp_path: Path) -> None:
    kling.polls_to_finish = 10**9
    ctx = Ctx(tmp_path)
    error = failure(kling_engine(kling, max_wait_s=0.2), job(), ctx)
    [task_id] = kling.tasks
    assert error.code == "upstream_timeout" and task_id in error.message
    assert kling.tasks[task_id]["queries"] >= 2
    assert ctx.fractions and max(ctx.fractions) < 1.0


def test_kling_cancel_while_waiting_says_the_task_may_be_billed(kling: KlingFake, tmp_path: Path) -> None:
    kling.polls_to_finish = 10**9
    ctx = Ctx(tmp_path, cancel_on_progress=True)
    error = failure(kling_engine(kling), job(), ctx, JobCancelled)
    [task_id] = kling.tasks
    assert "billed" in error.message and task_id in error.message
    assert kling.creates == 1
    assert not (tmp_path / "video.mp4").exists()


def test_kling_failed_task_fails_with_its_reason(kling: KlingFake, tmp_path: Path) -> None:
    kling.finish_as = "failed"
    error = failure(kling_engine(kling), job(), Ctx(tmp_path))
    assert error.code == "upstream_error" and kling.fail_message in error.message


def test_kling_result_that_is_not_a_video_fails_upstream_error(
    kling: KlingFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kling, "video_bytes", lambda task_id, n=0: b"<html>not a video</html>")
    error = failure(kling_engine(kling), job(), Ctx(tmp_path))
    assert error.code == "upstream_error" and "Kling" in error.message
    assert kling.creates == 1


def test_kling_missing_result_file_fails_upstream_error(kling: KlingFake, tmp_path: Path) -> None:
    kling.missing_results = True
    error = failure(kling_engine(kling), job(), Ctx(tmp_path))
    assert error.code == "upstream_error" and "/results/" in error.message


def test_kling_content_policy_refusal_is_upstream_rejected(kling: KlingFake, tmp_path: Path) -> None:
    j = job(MASTER, payload={"prompt": "something forbidden", "duration": "5"})
    error = failure(kling_engine(kling), j, Ctx(tmp_path))
    assert error.code == "upstream_rejected" and kling.creates == 0


def test_kling_invalid_parameter_fails_with_klings_message(kling: KlingFake, tmp_path: Path) -> None:
    kling.inject("create", Fault("status", http_status=400, code=1201, message="cfg_scale is out of range"))
    error = failure(kling_engine(kling), job(), Ctx(tmp_path))
    assert error.code == "upstream_error" and "cfg_scale is out of range" in error.message
    assert kling.creates == 0 and kling.calls == [("POST", T2V)]


def test_kling_wrong_secret_key_names_the_credentials(kling: KlingFake, tmp_path: Path) -> None:
    error = failure(kling_engine(kling, secret_key="x" * 40), job(), Ctx(tmp_path))
    assert error.code == "upstream_error" and "KLING_ACCESS_KEY" in error.message
    assert kling.creates == 0 and kling.auth_failures == 1


def test_kling_engine_refuses_models_it_cannot_serve(kling: KlingFake) -> None:
    with pytest.raises(ValueError, match="wan-2"):
        KlingEngine({"wan-2"}, KlingSettings(base_url=kling.url), ACCESS_KEY, SECRET_KEY)


# -- GMI end to end (engine ↔ fake) ----------------------------------------------------------------------------


def test_gmi_create_sends_an_idempotency_key_and_copies_the_result(gmi: GmiFake, tmp_path: Path) -> None:
    j = job(TURBO)
    ctx = Ctx(tmp_path)
    media = generate(gmi_engine(gmi), j, ctx)
    [task_id] = gmi.tasks
    assert gmi.idempotency_keys == [f"vidqueue-{j.request_id}"]
    assert gmi.tasks[task_id]["body"] == {"model": TURBO, "payload": j.payload}
    assert media.extra == {"upstream": {"provider": "gmi", "task_id": task_id}}
    assert media.videos[0].read_bytes() == gmi.video_bytes(task_id)
    assert [s.get("task_id") for s in ctx.states] == [None, task_id]
    assert ctx.fractions[-1] == 1.0


def test_gmi_image_is_inlined_as_base64(gmi: GmiFake, tmp_path: Path) -> None:
    image = png()
    j = job(TURBO, payload={"prompt": PROMPT, "image": "https://example.com/in.png"}, image=image)
    generate(gmi_engine(gmi), j, Ctx(tmp_path))
    [task] = gmi.tasks.values()
    assert task["payload"]["image"] == base64.b64encode(image).decode("ascii")


def test_gmi_old_outcome_shape_works(gmi: GmiFake, tmp_path: Path) -> None:
    gmi.old_shape = True
    media = generate(gmi_engine(gmi), job(), Ctx(tmp_path))
    [task_id] = gmi.tasks
    assert media.videos[0].read_bytes() == gmi.video_bytes(task_id)


def test_gmi_lost_create_is_found_in_the_list_and_not_made_again(gmi: GmiFake, tmp_path: Path) -> None:
    gmi.inject("create", Fault("reset", after=True))
    j = job()
    media = generate(gmi_engine(gmi), j, Ctx(tmp_path))
    assert gmi.creates == 1 and gmi.faults_left("create") == 0
    [task_id] = gmi.tasks
    assert media.extra["upstream"]["task_id"] == task_id
    list_path = "/api/v1/ie/requestqueue/apikey/requests"
    assert gmi.calls[:2] == [("POST", list_path), ("GET", list_path)]


def test_gmi_create_that_times_out_is_waited_for_until_it_shows_in_the_list(gmi: GmiFake, tmp_path: Path) -> None:
    # The create is made 0.4 s after it was sent, after the 0.2 s call timeout: the engine keeps looking for it
    # (GMI lists a request only once it is made) instead of submitting again.
    gmi.inject("create", Fault("delay", seconds=0.4))
    engine = gmi_engine(gmi, request_timeout_s=0.2, retry_deadline_s=3)
    media = generate(engine, job(), Ctx(tmp_path))
    assert gmi.creates == 1 and len(gmi.idempotency_keys) == 1
    [task_id] = gmi.tasks
    assert media.extra["upstream"]["task_id"] == task_id


def test_gmi_create_that_never_arrived_is_made_once_after_the_settle_time(gmi: GmiFake, tmp_path: Path) -> None:
    gmi.inject("create", Fault("reset"))  # the connection drops before GMI acts on it
    j = job()
    engine = gmi_engine(gmi, request_timeout_s=0.1)
    assert engine.settle_s == pytest.approx(0.2)
    started = time.monotonic()
    generate(engine, j, Ctx(tmp_path))
    assert time.monotonic() - started >= engine.settle_s
    assert gmi.creates == 1 and gmi.idempotency_keys == [f"vidqueue-{j.request_id}"] * 2


def test_gmi_base_url_that_names_the_queue_path_is_used_as_it_is(gmi: GmiFake, tmp_path: Path) -> None:
    engine = GmiEngine({MASTER}, GmiSettings(base_url=gmi.api_url, **FAST), GMI_KEY, allow_private_urls=True)
    generate(engine, job(), Ctx(tmp_path))
    assert gmi.creates == 1 and gmi.calls[0] == ("POST", "/api/v1/ie/requestqueue/apikey/requests")


def test_gmi_lost_create_is_not_confused_with_another_requests_task(gmi: GmiFake, tmp_path: Path) -> None:
    other = job()
    generate(gmi_engine(gmi), other, Ctx(tmp_path / "other"))
    j = job()  # another prompt: the earlier task is not this request's
    media = generate(gmi_engine(gmi), j, Ctx(tmp_path / "mine", {"creating": True, "since": time.time()}))
    assert gmi.creates == 2
    assert gmi.tasks[media.extra["upstream"]["task_id"]]["payload"] == j.payload


def test_gmi_without_a_list_does_not_submit_again_after_a_crash(gmi: GmiFake, tmp_path: Path) -> None:
    gmi.list_supported = False
    ctx = Ctx(tmp_path, {"creating": True, "since": time.time() - 5})
    error = failure(gmi_engine(gmi), job(), ctx)
    assert error.code == "upstream_error" and "did not submit again" in error.message
    assert gmi.creates == 0 and gmi.idempotency_keys == []


def test_gmi_wrong_key_names_gmi_api_key(gmi: GmiFake, tmp_path: Path) -> None:
    error = failure(gmi_engine(gmi, api_key="wrong"), job(), Ctx(tmp_path))
    assert error.code == "upstream_error" and "GMI_API_KEY" in error.message
    assert gmi.creates == 0 and gmi.auth_failures == 1


def test_gmi_400_is_upstream_rejected(gmi: GmiFake, tmp_path: Path) -> None:
    j = job(MASTER, payload={"prompt": "a forbidden scene", "duration": "5"})
    error = failure(gmi_engine(gmi), j, Ctx(tmp_path))
    assert error.code == "upstream_rejected" and "Content policy violation" in error.message
    assert gmi.creates == 0


def test_gmi_failed_request_fails_with_its_reason(gmi: GmiFake, tmp_path: Path) -> None:
    gmi.finish_as = "failed"
    error = failure(gmi_engine(gmi), job(), Ctx(tmp_path))
    assert error.code == "upstream_error" and gmi.fail_message in error.message


def test_gmi_progress_rises_while_waiting_and_ends_at_one(gmi: GmiFake, tmp_path: Path) -> None:
    gmi.polls_to_finish = 4
    ctx = Ctx(tmp_path)
    generate(gmi_engine(gmi), job(), ctx)
    waiting = [f for f in ctx.fractions if f < 0.9]
    assert len(waiting) == 3  # one estimate after each poll that found the request unfinished
    assert waiting[0] > 0 and ctx.fractions == sorted(ctx.fractions) and ctx.fractions[-1] == 1.0
