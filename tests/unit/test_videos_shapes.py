"""The /v1/videos translation: create fields into a model's payload, requests into video objects, error naming."""

from __future__ import annotations

import pytest

from tests.cases import MASTER, PROMPT, TURBO
from vidqueue.api.errors import ErrorAnswer
from vidqueue.api.videos.errors import openai_error, renamed
from vidqueue.api.videos.shapes import CreateBody, durations, present_video, sizes, translate
from vidqueue.catalog import Catalog
from vidqueue.engines.emulator import SIZES
from vidqueue.errors import FieldError, InvalidInput
from vidqueue.store import RequestRecord, Status

CATALOG = Catalog()


def _translate(model: str, form: bool = False, upload: bytes | None = None, **fields: object) -> dict[str, object]:
    return translate(CATALOG.get(model), CreateBody({"model": model, **fields}, form=form, upload=upload)).payload


def _refused(model: str, **fields: object) -> list[FieldError]:
    with pytest.raises(InvalidInput) as caught:
        _translate(model, **fields)
    return caught.value.details


def test_sizes_are_the_models_frames_by_aspect_ratio() -> None:
    assert sizes(CATALOG.get(MASTER)) == {"1280x720": "16:9", "720x1280": "9:16", "720x720": "1:1"}
    assert sizes(CATALOG.get("wan2.1-t2v-1.3b")) == {"832x480": "16:9", "480x832": "9:16", "624x624": "1:1"}
    assert sizes(CATALOG.get(TURBO)) == {"1280x720": None}  # no aspect_ratio: one shape from text
    assert durations(CATALOG.get(TURBO)) == ["5", "10"]


def test_nominal_sizes_are_the_ones_the_emulator_renders() -> None:
    assert {f"{w}x{h}": r for r, (w, h) in SIZES.items()} == sizes(CATALOG.get(MASTER))


def test_seconds_and_size_become_duration_and_aspect_ratio() -> None:
    payload = _translate(MASTER, prompt=PROMPT, seconds="10", size="720X1280")
    assert payload == {"prompt": PROMPT, "duration": "10", "aspect_ratio": "9:16"}
    assert _translate(MASTER, prompt=PROMPT, seconds=5)["duration"] == "5"


def test_form_strings_are_read_as_the_parameters_types() -> None:
    fields = {"seed": "7", "num_inference_steps": "3", "cfg_scale": "0.3", "negative_prompt": "42"}
    payload = _translate("wan2.1-t2v-1.3b", form=True, prompt=PROMPT, **fields)
    assert (payload["seed"], payload["num_inference_steps"], payload["cfg_scale"]) == (7, 3, 0.3)
    assert payload["negative_prompt"] == "42"  # a string parameter stays a string
    assert _translate(MASTER, form=True, prompt=PROMPT, cfg={"scale": "0.4"})["cfg"] == {"scale": 0.4}
    assert _translate(MASTER, form=True, prompt=PROMPT, cfg_scale="nan")["cfg_scale"] == "nan"  # the model refuses it
    assert _translate(MASTER, prompt=PROMPT, cfg_scale="0.3")["cfg_scale"] == "0.3"  # JSON is taken as sent


def test_an_upload_is_handed_to_image_intake_as_base64() -> None:
    assert _translate(TURBO, upload=b"\x89PNG....", prompt=PROMPT)["image"] == "iVBORy4uLi4="
    assert _translate(TURBO, prompt=PROMPT, input_reference={"image_url": "https://x/a.png"})["image"] == (
        "https://x/a.png"
    )


@pytest.mark.parametrize(
    ("model", "fields", "field", "words"),
    [
        (MASTER, {"size": "1792x1024"}, "size", '"1280x720", "720x1280", "720x720"'),
        (TURBO, {"size": "720x1280"}, "size", '"1280x720"'),
        (TURBO, {"seconds": "8"}, "seconds", '"5", "10"'),
        (TURBO, {"seconds": True}, "seconds", '"5", "10"'),
        (MASTER, {"input_reference": "https://x/a.png"}, "input_reference", "takes no input image"),
        (TURBO, {"input_reference": {"file_id": "file_1"}}, "input_reference.file_id", "keeps no files"),
        (TURBO, {"input_reference": 3}, "input_reference", "JPEG or PNG file"),
        (TURBO, {"duration": "5", "seconds": "5"}, "duration", "give one of them"),
        (TURBO, {"n": "2"}, "n", "allowed: model, prompt, seconds, size, input_reference"),
        (TURBO, {"priority": 1000}, "priority", "between -100 and 100"),
        (TURBO, {"callback_url": ""}, "callback_url", "1 to 2048"),
    ],
)
def test_what_cannot_be_translated_names_its_field(
    model: str, fields: dict[str, object], field: str, words: str
) -> None:
    details = _refused(model, prompt=PROMPT, **fields)
    assert details[0].field == field and words in details[0].message, details


def test_errors_of_the_queue_are_named_the_dialects_way() -> None:
    exc = InvalidInput(
        details=[FieldError("payload.duration", "is bad"), FieldError("payload.cfg.scale", "is bad")],
    )
    out = renamed(exc, {"payload.duration": "seconds"})
    assert [d.field for d in out.details] == ["seconds", "cfg.scale"]
    assert out.message == "seconds is bad (and 1 more)"


def test_the_v1_error_shape_names_the_param_and_a_type_by_status() -> None:
    answer = ErrorAnswer(400, "size is bad", "invalid_request", [FieldError("size", "is bad")])
    body = openai_error(answer).body
    assert (
        body
        == b'{"error":{"message":"size is bad","type":"invalid_request_error","param":"size","code":"invalid_request"}}'
    )
    limited = openai_error(ErrorAnswer(429, "slow down", "rate_limited", headers={"Retry-After": "7"}))
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"


def _record(status: Status, **changes: object) -> RequestRecord:
    base = RequestRecord(
        request_id="r1",
        seq=1,
        org_id="o",
        model=MASTER,
        status=status,
        payload={"prompt": PROMPT, "duration": "10", "aspect_ratio": "9:16"},
        created_at=100.5,
        updated_at=100.5,
        queued_at=100.5,
    )
    return base.evolve(**changes)


def test_statuses_map_onto_the_videos_api() -> None:
    spec = CATALOG.get(MASTER)
    queued = present_video(_record(Status.QUEUED, queue_position=3), spec, 86400)
    assert (queued["status"], queued["completed_at"], queued["expires_at"], queued["error"]) == (
        "queued",
        None,
        None,
        None,
    )
    assert (queued["seconds"], queued["size"], queued["queue_position"]) == ("10", "720x1280", 3)
    assert present_video(_record(Status.PROCESSING), spec, 0)["status"] == "in_progress"
    done = _record(Status.SUCCESS, finished_at=200.9, progress=100, outcome={"video": {"width": 704, "height": 1280}})
    video = present_video(done, spec, 86400)
    assert (video["status"], video["completed_at"], video["expires_at"]) == ("completed", 200, 86600)
    assert video["size"] == "704x1280"  # what was made
    error = {"error": {"code": "cancelled", "message": "Cancelled by the owner."}}
    cancelled = present_video(_record(Status.CANCELLED, finished_at=150.0, outcome=error), spec, 0)
    assert cancelled["status"] == "failed" and cancelled["error"] == error["error"]
