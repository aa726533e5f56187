"""The tiny random diffusers pipelines: each family builds, loads offline with the engine's class and makes a video."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from PIL import Image  # noqa: E402

from tests.tiny_pipelines import FAMILIES, build_tiny  # noqa: E402

HEIGHT, WIDTH, FRAMES, STEPS = 32, 64, 9, 2
TORCH_DTYPE_WARNING = "ignore:`torch_dtype` is deprecated:FutureWarning:diffusers.utils.deprecation_utils"

# family → (text pipeline class or None, image pipeline class or None); the image one of wan2.2 / ltx loads the same
# folder through from_pipe, that of wan2.1-i2v is the only class of its folder.
CLASSES: dict[str, tuple[Any, Any]] = {
    "wan2.1-t2v": (diffusers.WanPipeline, None),
    "wan2.1-i2v": (None, diffusers.WanImageToVideoPipeline),
    "wan2.2-ti2v": (diffusers.WanPipeline, diffusers.WanImageToVideoPipeline),
    "ltx-video": (diffusers.LTXPipeline, diffusers.LTXImageToVideoPipeline),
}
CASES = [
    (family, mode) for family, pair in CLASSES.items() for mode, cls in zip(("text", "image"), pair, strict=True) if cls
]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hub offline mode on, and any attempt to open a network connection fails the test."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def first_frame(flip: bool = False) -> Image.Image:
    """A 40x48 gradient (upside down with ``flip``), deliberately not the output size: the pipelines resize it."""
    ramp = np.linspace(0, 255, 48 * 40 * 3).reshape(40, 48, 3).astype(np.uint8)
    return Image.fromarray(ramp[::-1] if flip else ramp)


def load(family: str, folder: Path, mode: str) -> Any:
    """The pipeline the engine uses for ``family`` in ``mode``; the image one of a two-way family via from_pipe."""
    text_cls, image_cls = CLASSES[family]
    if text_cls is None:
        return image_cls.from_pretrained(folder, dtype=torch.float32)
    pipe = text_cls.from_pretrained(folder, dtype=torch.float32)
    if mode == "text":
        return pipe
    # from_pipe casts every (shared!) module to its own dtype argument, float32 when not given: always pass it.
    image_pipe = image_cls.from_pipe(pipe, dtype=torch.float32)
    assert image_pipe.transformer is pipe.transformer  # nothing is loaded twice
    return image_pipe


def generate(
    pipe: Any, mode: str, seed: int, on_step: Callable[..., dict[str, Any]] | None = None, flip: bool = False
) -> np.ndarray:
    """One classifier-free-guided 2-step video as a (frames, height, width, 3) float array."""
    kwargs: dict[str, Any] = {
        "prompt": "A red fox runs through snowy woods, zyxwv ünïcode 狐",
        "negative_prompt": "blurry, low quality",
        "height": HEIGHT,
        "width": WIDTH,
        "num_frames": FRAMES,
        "num_inference_steps": STEPS,
        "guidance_scale": 5.0,
        "output_type": "np",
        "generator": torch.Generator().manual_seed(seed),
        "callback_on_step_end": on_step,
    }
    if mode == "image":
        kwargs["image"] = first_frame(flip)
    if isinstance(pipe, diffusers.LTXPipeline | diffusers.LTXImageToVideoPipeline):
        # The LTX-only knobs: RoPE time scale and the timestep-conditioned VAE decode (LTX-Video 0.9.1+ values).
        kwargs.update(frame_rate=24, decode_timestep=0.05, decode_noise_scale=0.025)
    pipe.set_progress_bar_config(disable=True)
    frames = pipe(**kwargs).frames
    assert isinstance(frames, np.ndarray)
    assert frames.shape[0] == 1  # one video per prompt
    return frames[0]


@pytest.mark.parametrize(("family", "mode"), CASES)
def test_builds_loads_and_generates_deterministically(
    family: str, mode: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """Build → from_pretrained → a guided video of the asked shape, once per step called back, same seed same video."""
    start = time.perf_counter()
    folder = build_tiny(family, tmp_path / family)
    built = time.perf_counter()
    pipe = load(family, folder, mode)
    loaded = time.perf_counter()
    steps: list[int] = []

    def on_step(_pipe: Any, step: int, _timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        steps.append(step)
        return callback_kwargs

    video = generate(pipe, mode, seed=7, on_step=on_step)
    done = time.perf_counter()
    record_property("seconds", {"build": built - start, "load": loaded - built, "generate": done - loaded})

    assert video.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert video.dtype == np.float32
    assert np.isfinite(video).all()
    assert video.min() >= 0.0
    assert video.max() <= 1.0
    assert steps == list(range(STEPS))
    assert np.array_equal(generate(pipe, mode, seed=7), video)
    assert not np.array_equal(generate(pipe, mode, seed=8), video)
    if mode == "image":
        assert not np.array_equal(generate(pipe, mode, seed=7, flip=True), video)


@pytest.mark.parametrize("family", ["wan2.2-ti2v", "ltx-video"])
def test_the_image_pipeline_loads_from_the_folder_as_well_as_from_pipe(family: str, tmp_path: Path) -> None:
    """The image class's from_pretrained on the text pipeline's folder gives the same video as from_pipe."""
    folder = build_tiny(family, tmp_path / family)
    direct = CLASSES[family][1].from_pretrained(folder, dtype=torch.float32)
    if family == "wan2.2-ti2v":
        assert direct.config.expand_timesteps is True
        assert direct.image_encoder is None
        assert direct.image_processor is None
    assert np.array_equal(generate(direct, "image", seed=3), generate(load(family, folder, "image"), "image", seed=3))


@pytest.mark.filterwarnings(TORCH_DTYPE_WARNING)
def test_the_torch_dtype_spelling_loads_too(tmp_path: Path) -> None:
    """from_pretrained(folder, torch_dtype=...) still works; diffusers 0.42 only warns that `dtype` is the new name."""
    folder = build_tiny("wan2.1-t2v", tmp_path / "wan")
    with pytest.warns(FutureWarning, match="torch_dtype"):
        pipe = diffusers.WanPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    assert pipe.transformer.dtype == torch.float32


def test_wan21_i2v_needs_an_image(tmp_path: Path) -> None:
    """The Wan 2.1 I2V pipeline refuses a call without an image (`image` is a required argument of its __call__)."""
    pipe = load("wan2.1-i2v", build_tiny("wan2.1-i2v", tmp_path / "i2v"), "image")
    with pytest.raises(TypeError, match="image"):
        pipe(prompt="a cat", height=HEIGHT, width=WIDTH, num_frames=FRAMES, num_inference_steps=1, output_type="np")


@pytest.mark.parametrize("family", FAMILIES)
def test_builds_are_reproducible(family: str, tmp_path: Path) -> None:
    """The same seed writes byte-identical weights; another seed different ones."""

    def weights(seed: int, name: str) -> dict[str, bytes]:
        folder = build_tiny(family, tmp_path / name, seed=seed)
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.safetensors"))}

    first = weights(0, "a")
    assert first
    assert weights(0, "b") == first
    assert weights(1, "c") != first


def test_the_tokenizer_takes_any_text_the_way_the_pipelines_call_it(tmp_path: Path) -> None:
    """Unknown words, accents, other scripts and empty prompts all tokenize to padded ids ending in </s>."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(build_tiny("ltx-video", tmp_path / "ltx") / "tokenizer")
    prompts = ["A cat walks on the beach", "漢字 — Café crème, quixotic zebras!", "", "word " * 300]
    batch = tokenizer(
        prompts,
        padding="max_length",
        max_length=16,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    ids, mask = batch.input_ids, batch.attention_mask
    assert ids.shape == mask.shape == (4, 16)
    lengths = mask.sum(dim=1).tolist()
    assert lengths == [7, 16, 1, 16]  # 6 words + </s>; the long ones truncated; "" is just </s>
    for row, n in zip(ids.tolist(), lengths, strict=True):
        assert row[n - 1] == tokenizer.eos_token_id
        assert row[n:] == [tokenizer.pad_token_id] * (16 - n)
    assert tokenizer.unk_token_id not in ids[0].tolist()
    assert tokenizer.unk_token_id in ids[1].tolist()  # 漢字 and the dash; café → cafe
    assert ids[0].tolist() != ids[1].tolist()


def test_an_unknown_family_is_refused(tmp_path: Path) -> None:
    """build_tiny names the families it knows."""
    with pytest.raises(ValueError, match=r"wan2\.1-t2v"):
        build_tiny("sora", tmp_path)
