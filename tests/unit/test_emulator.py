"""The emulator engine: real, decodable, deterministic video that honours the payload."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from tests.unit.test_encode import churn_memory
from vidqueue.engines.base import Engine, GeneratedMedia, Job
from vidqueue.engines.emulator import EmulatorEngine, clip_seed, output_size
from vidqueue.errors import JobCancelled, JobFailed
from vidqueue.media.encode import iter_decoded_rgb, probe
from vidqueue.media.synthetic import SyntheticClip

MODEL = "kling-v2-5-turbo"


class FakeContext:
    """A JobContext that records progress and can cancel itself once progress passes a point."""

    def __init__(self, workdir: Path, cancel_after: float | None = None) -> None:
        self._workdir = workdir
        self.cancel_after = cancel_after
        self.reports: list[float] = []
        self.checkpoints: list[dict[str, Any]] = []

    @property
    def workdir(self) -> Path:
        return self._workdir

    @property
    def resume_state(self) -> dict[str, Any] | None:
        return None

    def progress(self, fraction: float) -> None:
        self.reports.append(fraction)

    def cancelled(self) -> bool:
        return self.cancel_after is not None and bool(self.reports) and self.reports[-1] >= self.cancel_after

    def checkpoint(self, state: dict[str, Any]) -> None:
        self.checkpoints.append(state)

    def stage_done(self) -> None:
        pass


class FakeSleep:
    """Records requested sleeps instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def job(payload: dict[str, Any], request_id: str = "req-1", image: bytes | None = None) -> Job:
    return Job(request_id=request_id, org_id="default", model=MODEL, payload=payload, input_image=image)


def run(engine: EmulatorEngine, job_: Job, folder: Path) -> tuple[GeneratedMedia, FakeContext]:
    folder.mkdir(parents=True, exist_ok=True)
    ctx = FakeContext(folder)
    return engine.generate(job_, ctx), ctx


def gradient_image(width: int, height: int, fmt: str = "PNG") -> bytes:
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt)
    return buf.getvalue()


def decoded_frames(video: Path, wanted: set[int]) -> list[np.ndarray]:
    """The decoded frames at the ``wanted`` indices, as RGB arrays, in order."""
    found = []
    with av.open(str(video)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                found.append(frame.to_ndarray(format="rgb24"))
            if index >= max(wanted):
                break
    return found


@pytest.fixture
def engine() -> EmulatorEngine:
    return EmulatorEngine({MODEL})


def test_the_engine_is_an_engine(engine: EmulatorEngine) -> None:
    as_engine: Engine = engine
    as_engine.setup()
    assert as_engine.kind == "emulator"
    assert as_engine.models() == {MODEL}


@pytest.mark.parametrize("duration", ["5", "10"])
@pytest.mark.parametrize(("aspect_ratio", "size"), [("16:9", (1280, 720)), ("9:16", (720, 1280)), ("1:1", (720, 720))])
def test_video_has_the_asked_size_and_exactly_24_frames_per_second(
    engine: EmulatorEngine, tmp_path: Path, aspect_ratio: str, size: tuple[int, int], duration: str
) -> None:
    payload = {"prompt": "a red fox in snow", "duration": duration, "aspect_ratio": aspect_ratio}
    media, _ = run(engine, job(payload), tmp_path)
    video = media.videos[0]
    assert video == tmp_path / "video.mp4"
    info = probe(video)  # decodes every frame
    seconds = int(duration)
    assert (info.width, info.height) == size
    assert (info.fps, info.frames, info.codec) == (24, 24 * seconds, "h264")
    assert info.duration == pytest.approx(seconds)
    assert media.info == info
    with av.open(str(video)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
    data = video.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # +faststart


def test_aspect_ratio_defaults_to_16_9(engine: EmulatorEngine, tmp_path: Path) -> None:
    media, _ = run(engine, job({"prompt": "x", "duration": "5"}), tmp_path)
    assert (media.info.width, media.info.height) == (1280, 720)


def test_a_thumbnail_jpeg_comes_with_the_video(engine: EmulatorEngine, tmp_path: Path) -> None:
    media, _ = run(engine, job({"prompt": "x", "duration": "5"}), tmp_path)
    assert media.thumbnail == tmp_path / "thumbnail.jpg"
    with Image.open(media.thumbnail) as thumb:
        assert thumb.format == "JPEG"
        assert max(thumb.size) <= 640
        assert thumb.size == (640, 360)


def test_with_an_image_the_video_takes_its_aspect_ratio(engine: EmulatorEngine, tmp_path: Path) -> None:
    payload = {"prompt": "zoom in", "duration": "5", "aspect_ratio": "16:9"}
    media, _ = run(engine, job(payload, image=gradient_image(600, 900)), tmp_path)
    assert (media.info.width, media.info.height) == (854, 1280)
    assert probe(media.videos[0]).frames == 120


def test_with_an_image_the_first_frame_is_the_image(engine: EmulatorEngine, tmp_path: Path) -> None:
    image = gradient_image(1000, 500, "JPEG")
    media, _ = run(engine, job({"prompt": "pan", "duration": "5"}, image=image), tmp_path)
    first = next(iter_decoded_rgb(media.videos[0]))
    assert first.shape == (640, 1280, 3)
    expected = Image.open(io.BytesIO(image)).convert("RGB").resize((32, 16), Image.Resampling.BOX)
    got = Image.fromarray(first).resize((32, 16), Image.Resampling.BOX)
    difference = np.abs(np.asarray(expected, dtype=int) - np.asarray(got, dtype=int))
    assert difference.mean() < 4
    assert difference.max() < 24


def test_with_an_image_the_camera_moves_after_the_first_frame(engine: EmulatorEngine, tmp_path: Path) -> None:
    media, _ = run(engine, job({"prompt": "pan", "duration": "5"}, image=gradient_image(1000, 500)), tmp_path)
    first, later = decoded_frames(media.videos[0], {0, 100})
    # Compare away from the caption and label: the zoom alone changes the picture.
    rows, cols = slice(200, 440), slice(300, 980)
    assert np.abs(first[rows, cols].astype(int) - later[rows, cols].astype(int)).mean() > 2


@pytest.mark.parametrize(("image_size", "video_size"), [((750, 300), (1280, 512)), ((333, 333), (1280, 1280))])
def test_image_sizes_map_to_even_sides_with_a_long_side_of_1280(
    image_size: tuple[int, int], video_size: tuple[int, int]
) -> None:
    assert output_size("16:9", image_size) == video_size


def test_the_same_payload_gives_the_same_bytes(engine: EmulatorEngine, tmp_path: Path) -> None:
    payload = {"prompt": "a lighthouse in a storm", "duration": "5", "aspect_ratio": "9:16"}
    first, _ = run(engine, job(payload, request_id="a"), tmp_path / "a")
    churn_memory()
    second, _ = run(EmulatorEngine({MODEL}), job(dict(payload), request_id="b"), tmp_path / "b")
    assert first.videos[0].read_bytes() == second.videos[0].read_bytes()
    assert first.thumbnail is not None and second.thumbnail is not None
    assert first.thumbnail.read_bytes() == second.thumbnail.read_bytes()


def test_a_different_prompt_gives_different_bytes(engine: EmulatorEngine, tmp_path: Path) -> None:
    first, _ = run(engine, job({"prompt": "a lighthouse", "duration": "5"}), tmp_path / "a")
    second, _ = run(engine, job({"prompt": "a lighthouse!", "duration": "5"}), tmp_path / "b")
    assert first.videos[0].read_bytes() != second.videos[0].read_bytes()


def test_a_very_long_prompt_is_still_rendered(engine: EmulatorEngine, tmp_path: Path) -> None:
    prompt = "word " * 500 + "x" * 400
    media, _ = run(engine, job({"prompt": prompt, "duration": "5", "aspect_ratio": "1:1"}), tmp_path)
    assert media.info.frames == 120


def test_progress_rises_from_0_to_1(engine: EmulatorEngine, tmp_path: Path) -> None:
    _, ctx = run(engine, job({"prompt": "x", "duration": "5"}), tmp_path)
    assert ctx.reports[0] == 0.0
    assert ctx.reports[-1] == 1.0
    assert ctx.reports == sorted(ctx.reports)
    assert len(ctx.reports) >= 10


def test_latency_is_slept_in_short_slices_spread_over_progress(tmp_path: Path) -> None:
    sleep = FakeSleep()
    engine = EmulatorEngine({MODEL}, latency_s=3.0, sleep=sleep)
    _, ctx = run(engine, job({"prompt": "x", "duration": "5"}), tmp_path)
    assert sum(sleep.calls) == pytest.approx(3.0)
    assert max(sleep.calls) <= 0.1 + 1e-9
    assert ctx.reports == sorted(ctx.reports)
    assert ctx.reports[-1] == 1.0
    assert len(set(ctx.reports)) >= 20


def test_cancel_stops_the_run_with_job_cancelled(engine: EmulatorEngine, tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    ctx = FakeContext(tmp_path, cancel_after=0.3)
    with pytest.raises(JobCancelled):
        engine.generate(job({"prompt": "x", "duration": "10"}), ctx)
    assert 0.3 <= ctx.reports[-1] < 0.5
    assert not (tmp_path / "video.mp4").exists()


def test_cancel_is_seen_during_simulated_latency(tmp_path: Path) -> None:
    sleep = FakeSleep()
    engine = EmulatorEngine({MODEL}, latency_s=60.0, sleep=sleep)
    ctx = FakeContext(tmp_path, cancel_after=0.1)
    with pytest.raises(JobCancelled):
        engine.generate(job({"prompt": "x", "duration": "5"}), ctx)
    assert sum(sleep.calls) < 60.0 * 0.2


def test_cancel_before_start_raises_at_once(engine: EmulatorEngine, tmp_path: Path) -> None:
    ctx = FakeContext(tmp_path, cancel_after=0.0)
    with pytest.raises(JobCancelled):
        engine.generate(job({"prompt": "x", "duration": "5"}), ctx)
    assert ctx.reports == [0.0]


def test_failure_rate_1_fails_every_request_after_some_progress(tmp_path: Path) -> None:
    engine = EmulatorEngine({MODEL}, failure_rate=1.0)
    ctx = FakeContext(tmp_path)
    with pytest.raises(JobFailed) as exc:
        engine.generate(job({"prompt": "x", "duration": "5"}), ctx)
    assert type(exc.value) is JobFailed
    assert exc.value.code == "engine_error"
    assert exc.value.message == "Emulated engine failure (failure_rate=1)."
    assert ctx.reports[-1] > 0.3
    assert not (tmp_path / "video.mp4").exists()


def test_failure_rate_0_fails_none() -> None:
    engine = EmulatorEngine({MODEL}, failure_rate=0.0)
    assert not any(engine.fails(f"req-{i}") for i in range(500))


def test_failure_rate_picks_a_stable_share_of_requests() -> None:
    engine = EmulatorEngine({MODEL}, failure_rate=0.3)
    picks = [engine.fails(f"req-{i}") for i in range(2000)]
    assert 0.25 < sum(picks) / len(picks) < 0.35
    assert picks == [EmulatorEngine({MODEL}, failure_rate=0.3).fails(f"req-{i}") for i in range(2000)]


def test_settings_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError):
        EmulatorEngine({MODEL}, failure_rate=1.5)
    with pytest.raises(ValueError):
        EmulatorEngine({MODEL}, latency_s=-1)


def test_an_unknown_aspect_ratio_fails_as_invalid_input(engine: EmulatorEngine, tmp_path: Path) -> None:
    with pytest.raises(JobFailed) as exc:
        run(engine, job({"prompt": "x", "duration": "5", "aspect_ratio": "4:3"}), tmp_path)
    assert exc.value.code == "invalid_input"


def test_a_text_clip_shows_sliding_shapes_a_running_timecode_and_a_growing_stripe(
    engine: EmulatorEngine, tmp_path: Path
) -> None:
    media, _ = run(engine, job({"prompt": "a red fox in snow", "duration": "5"}), tmp_path)
    first, middle, last = (frame.astype(int) for frame in decoded_frames(media.videos[0], {0, 60, 119}))

    def changed(a: np.ndarray, b: np.ndarray, rows: slice, cols: slice) -> float:
        return float(np.abs(a[rows, cols] - b[rows, cols]).mean())

    # The label (top left) and the caption (bottom) hold still; the label is a red badge.
    assert changed(first, last, slice(32, 100), slice(32, 200)) == 0
    assert changed(first, last, slice(600, 680), slice(32, 1248)) == 0
    red, green, blue = first[40:90, 40:190].reshape(-1, 3).mean(axis=0)
    assert red > 1.5 * green and red > 1.5 * blue
    # The timecode (top right) runs, and the shapes between label and caption move.
    timecode = slice(32, 62), slice(1120, 1248)
    assert changed(first, middle, *timecode) > 1 and changed(middle, last, *timecode) > 1
    band = slice(120, 580), slice(0, 1280)
    assert changed(first, middle, *band) > 0.5 and changed(middle, last, *band) > 0.5
    # The progress stripe along the bottom edge fills with the frame number.
    for index, frame in ((0, first), (60, middle), (119, last)):
        bright = frame[-2].max(axis=1) > 100
        assert bright.mean() == pytest.approx((index + 1) / 120, abs=0.02)


def test_a_text_clip_decodes_to_exactly_the_frames_drawn(engine: EmulatorEngine, tmp_path: Path) -> None:
    payload = {"prompt": "a lighthouse in a storm", "duration": "5", "aspect_ratio": "9:16"}
    media, _ = run(engine, job(payload), tmp_path)
    clip = SyntheticClip(
        width=720,
        height=1280,
        frames=120,
        fps=24,
        seed=clip_seed(MODEL, payload, None),
        caption=payload["prompt"],
        sublabel=MODEL,
    )
    with av.open(str(media.videos[0])) as container:
        for index, frame in enumerate(container.decode(video=0)):
            assert np.array_equal(frame.to_ndarray(format="yuv420p"), clip.render(index)), f"frame {index}"
    assert index == 119
