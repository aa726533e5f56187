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

from tests.tiny_pipelines import (  # noqa: E402
    FAMILIES,
    LORA_FAMILIES,
    LORA_WEIGHT_NAME,
    WAN22_BOUNDARY_RATIO,
    build_tiny,
    build_tiny_lora,
)

HEIGHT, WIDTH, FRAMES, STEPS = 32, 64, 9, 2
TORCH_DTYPE_WARNING = "ignore:`torch_dtype` is deprecated:FutureWarning:diffusers.utils.deprecation_utils"

# family → (text pipeline class or None, image pipeline class or None); the image one of wan2.2 / ltx loads the same
# folder through from_pipe, that of wan2.1-i2v is the only class of its folder.
CLASSES: dict[str, tuple[Any, Any]] = {
    "wan2.1-t2v": (diffusers.WanPipeline, None),
    "wan2.1-i2v": (None, diffusers.WanImageToVideoPipeline),
    "wan2.2-ti2v": (diffusers.WanPipeline, diffusers.WanImageToVideoPipeline),
    "ltx-video": (diffusers.LTXPipeline, diffusers.LTXImageToVideoPipeline),
    "wan2.2-t2v": (diffusers.WanPipeline, None),
    "wan2.2-i2v": (None, diffusers.WanImageToVideoPipeline),
}
# HunyuanVideo 1.5 has no guidance_scale / callback_on_step_end arguments and its image class no height / width, so it
# has tests of its own; each family is its own folder and class.
HUNYUAN: dict[str, Any] = {
    "hunyuanvideo-1.5-t2v": diffusers.HunyuanVideo15Pipeline,
    "hunyuanvideo-1.5-i2v": diffusers.HunyuanVideo15ImageToVideoPipeline,
}
HUNYUAN_PROMPT = 'A red fox runs past a sign that says "OPEN", zyxwv ünïcode 狐'  # the quoted part goes through ByT5
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


def test_every_family_has_its_tests() -> None:
    """FAMILIES is exactly the Wan / LTX families of CLASSES and the HunyuanVideo ones; the LoRA ones are among them."""
    assert set(FAMILIES) == set(CLASSES) | set(HUNYUAN)
    assert set(LORA_FAMILIES) <= set(CLASSES)


@pytest.mark.parametrize("family", ["wan2.2-t2v", "wan2.2-i2v"])
def test_wan22_a14b_switches_experts_at_the_boundary(family: str, tmp_path: Path) -> None:
    """transformer runs while t >= boundary_ratio * 1000, transformer_2 below; guidance_scale_2 guides the latter."""
    mode = "image" if family == "wan2.2-i2v" else "text"
    pipe = load(family, build_tiny(family, tmp_path / family), mode)
    assert (
        pipe.config.boundary_ratio == WAN22_BOUNDARY_RATIO[family] == {"wan2.2-t2v": 0.875, "wan2.2-i2v": 0.9}[family]
    )
    layout = {k: v for k, v in pipe.transformer.config.items() if k != "_name_or_path"}
    assert {k: v for k, v in pipe.transformer_2.config.items() if k != "_name_or_path"} == layout  # same layout...
    assert not torch.equal(pipe.transformer.proj_out.weight, pipe.transformer_2.proj_out.weight)  # ...other weights
    if mode == "image":
        assert pipe.transformer.config.in_channels == 16 + 4 + 16
        assert pipe.transformer.config.image_dim is None
        assert pipe.image_encoder is None
        assert pipe.image_processor is None
    seen: dict[str, list[float]] = {"transformer": [], "transformer_2": []}

    def spy(name: str) -> Callable[..., None]:
        def hook(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
            seen[name].append(float(kwargs["timestep"].flatten()[0]))

        return hook

    for name in seen:
        getattr(pipe, name).register_forward_pre_hook(spy(name), with_kwargs=True)
    video = generate(pipe, mode, seed=7)
    assert video.shape == (FRAMES, HEIGHT, WIDTH, 3)
    boundary = pipe.config.boundary_ratio * pipe.scheduler.config.num_train_timesteps
    # Two steps (t = 999, 750), each guided: cond + uncond calls of the step's expert.
    assert seen == {"transformer": [999.0, 999.0], "transformer_2": [750.0, 750.0]}
    assert min(seen["transformer"]) >= boundary > max(seen["transformer_2"])

    def with_scale_2(scale_2: float | None) -> np.ndarray:
        return pipe(
            prompt="a cat walks on the beach",
            negative_prompt="blurry",
            height=HEIGHT,
            width=WIDTH,
            num_frames=FRAMES,
            num_inference_steps=STEPS,
            guidance_scale=5.0,
            guidance_scale_2=scale_2,
            generator=torch.Generator().manual_seed(1),
            output_type="np",
            **({"image": first_frame()} if mode == "image" else {}),
        ).frames[0]

    default = with_scale_2(None)
    assert np.array_equal(with_scale_2(5.0), default)  # None means "same as guidance_scale"
    assert not np.array_equal(with_scale_2(1.0), default)


def generate_hunyuan(pipe: Any, seed: int, **kwargs: Any) -> Any:
    """One 2-step HunyuanVideo 1.5 video (np by default): text at HEIGHT x WIDTH, or from ``image=``."""
    call: dict[str, Any] = {
        "prompt": HUNYUAN_PROMPT,
        "negative_prompt": "blurry, low quality",
        "num_frames": FRAMES,
        "num_inference_steps": STEPS,
        "output_type": "np",
        "generator": torch.Generator().manual_seed(seed),
    }
    if isinstance(pipe, diffusers.HunyuanVideo15Pipeline):
        call.update(height=HEIGHT, width=WIDTH)
    call.update(kwargs)
    pipe.set_progress_bar_config(disable=True)
    frames = pipe(**call).frames
    return frames[0] if call["output_type"] in ("np", "pt") else frames


def wide_frame(flip: bool = False) -> Image.Image:
    """first_frame stretched to 40x80 (h x w): HunyuanVideo 1.5 I2V makes 32x64 videos of it (its 1:2 size bucket)."""
    return first_frame(flip).resize((80, 40))


@pytest.mark.parametrize("family", list(HUNYUAN))
def test_hunyuan_builds_loads_and_generates_deterministically(
    family: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """Build → from_pretrained → a guided 32x64 video (the I2V one sized by its image), same seed same video."""
    start = time.perf_counter()
    folder = build_tiny(family, tmp_path / family)
    built = time.perf_counter()
    pipe = HUNYUAN[family].from_pretrained(folder, dtype=torch.float32)
    loaded = time.perf_counter()
    image = family.endswith("i2v")
    extra: dict[str, Any] = {"image": wide_frame()} if image else {}
    video = generate_hunyuan(pipe, seed=7, **extra)
    done = time.perf_counter()
    record_property("seconds", {"build": built - start, "load": loaded - built, "generate": done - loaded})

    assert pipe.guider.guidance_scale == 6.0
    assert video.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert video.dtype == np.float32
    assert np.isfinite(video).all()
    assert video.min() >= 0.0
    assert video.max() <= 1.0
    assert np.array_equal(generate_hunyuan(pipe, seed=7, **extra), video)
    assert not np.array_equal(generate_hunyuan(pipe, seed=8, **extra), video)
    if image:
        assert not np.array_equal(generate_hunyuan(pipe, seed=7, image=wide_frame(flip=True)), video)
        assert generate_hunyuan(pipe, seed=7, image=first_frame()).shape == (FRAMES, 48, 48, 3)  # 40x48 → 48x48
    else:
        assert generate_hunyuan(pipe, seed=7, height=40, width=48).shape == (FRAMES, 32, 48, 3)  # floored to 16s
        assert generate_hunyuan(pipe, seed=7, num_frames=10).shape == (9, HEIGHT, WIDTH, 3)  # floored to 4k + 1


@pytest.mark.parametrize("family", list(HUNYUAN))
def test_hunyuan_guidance_goes_through_the_guider(family: str, tmp_path: Path) -> None:
    """No guidance_scale / callback_on_step_end arguments; pipe.guider = pipe.guider.new(guidance_scale=...) instead."""
    pipe = HUNYUAN[family].from_pretrained(build_tiny(family, tmp_path / family), dtype=torch.float32)
    extra: dict[str, Any] = {"image": wide_frame()} if family.endswith("i2v") else {}
    for refused in ({"guidance_scale": 5.0}, {"callback_on_step_end": lambda *args: args[-1]}):
        with pytest.raises(TypeError, match=next(iter(refused))):
            generate_hunyuan(pipe, seed=1, **extra, **refused)
    calls: list[int] = []
    pipe.transformer.register_forward_pre_hook(lambda *_: calls.append(1))

    def run(scale: float) -> tuple[np.ndarray, int]:
        calls.clear()
        pipe.guider = pipe.guider.new(guidance_scale=scale)
        return generate_hunyuan(pipe, seed=1, **extra), len(calls)

    guided, guided_calls = run(6.0)
    plain, plain_calls = run(1.0)  # 1.0 turns CFG off: no negative prompt pass at all
    other, _ = run(3.0)
    assert (guided_calls, plain_calls) == (2 * STEPS, STEPS)
    assert not np.array_equal(guided, plain)
    assert not np.array_equal(guided, other)
    assert np.array_equal(run(6.0)[0], guided)  # the guider is the only state: back to 6.0, same video


def test_hunyuan_output_types(tmp_path: Path) -> None:
    """ "pt" is (frames, 3, H, W) in [0, 1]; "latent" the 8-channel latents, 16x smaller, (frames - 1) / 4 + 1 long."""
    pipe = diffusers.HunyuanVideo15Pipeline.from_pretrained(
        build_tiny("hunyuanvideo-1.5-t2v", tmp_path / "hv"), dtype=torch.float32
    )
    video = generate_hunyuan(pipe, seed=3)
    pt = generate_hunyuan(pipe, seed=3, output_type="pt")
    assert isinstance(pt, torch.Tensor)
    assert pt.shape == (FRAMES, 3, HEIGHT, WIDTH)
    assert pt.dtype == torch.float32
    assert 0.0 <= pt.min() <= pt.max() <= 1.0
    assert np.allclose(pt.permute(0, 2, 3, 1).numpy(), video, atol=1e-6)
    latent = generate_hunyuan(pipe, seed=3, output_type="latent")
    assert latent.shape == (1, 8, (FRAMES - 1) // 4 + 1, HEIGHT // 16, WIDTH // 16)


def test_hunyuan_i2v_takes_its_size_from_the_image_only(tmp_path: Path) -> None:
    """The I2V call needs a PIL image and has no height / width arguments."""
    pipe = diffusers.HunyuanVideo15ImageToVideoPipeline.from_pretrained(
        build_tiny("hunyuanvideo-1.5-i2v", tmp_path / "hv"), dtype=torch.float32
    )
    with pytest.raises(TypeError, match="height"):
        generate_hunyuan(pipe, seed=1, image=wide_frame(), height=HEIGHT, width=WIDTH)
    with pytest.raises(TypeError, match="image"):
        generate_hunyuan(pipe, seed=1)
    with pytest.raises(ValueError, match="PIL"):
        generate_hunyuan(pipe, seed=1, image=np.asarray(wide_frame()))


def test_hunyuan_from_pipe(tmp_path: Path) -> None:
    """I2V → T2V class shares the modules; T2V → I2V class lacks the image encoder unless it is passed in."""
    i2v = diffusers.HunyuanVideo15ImageToVideoPipeline.from_pretrained(
        build_tiny("hunyuanvideo-1.5-i2v", tmp_path / "i2v"), dtype=torch.float32
    )
    t2v = diffusers.HunyuanVideo15Pipeline.from_pipe(i2v, dtype=torch.float32)
    assert t2v.transformer is i2v.transformer
    assert generate_hunyuan(t2v, seed=1).shape == (FRAMES, HEIGHT, WIDTH, 3)
    with pytest.raises(ValueError, match="image_encoder"):
        diffusers.HunyuanVideo15ImageToVideoPipeline.from_pipe(t2v, dtype=torch.float32)


def test_the_hunyuan_tokenizer_crops_to_the_prompt(tmp_path: Path) -> None:
    """The chat template puts exactly crop_start (108) tokens before the prompt, which the pipeline drops."""
    pipe = diffusers.HunyuanVideo15Pipeline.from_pretrained(
        build_tiny("hunyuanvideo-1.5-t2v", tmp_path / "hv"), dtype=torch.float32
    )
    from transformers import Qwen2Tokenizer

    tokenizer, crop = pipe.tokenizer, pipe.prompt_template_encode_start_idx
    assert isinstance(tokenizer, Qwen2Tokenizer)
    assert crop == 108
    chats = [
        [{"role": "system", "content": pipe.system_message}, {"role": "user", "content": prompt}]
        for prompt in (HUNYUAN_PROMPT, "a cat")
    ]
    batch = tokenizer.apply_chat_template(
        chats,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        padding="max_length",
        max_length=pipe.tokenizer_max_length + crop,
        truncation=True,
        return_tensors="pt",
    )
    ids, mask = batch.input_ids, batch.attention_mask
    assert ids.shape == (2, 1000 + 108)
    assert tokenizer.unk_token_id not in ids[0].tolist()[: int(mask[0].sum())]  # byte-level: no unknowns
    kept = tokenizer.decode(ids[0, crop : int(mask[0].sum())])
    assert kept == HUNYUAN_PROMPT + "<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.decode(ids[1, crop:]).startswith("a cat<|im_end|>")
    assert ids[1, int(mask[1].sum()) :].eq(tokenizer.pad_token_id).all()


# One family per LoRA loader path: Wan's (text), Wan 2.2 A14B's two experts, LTX-Video's. The Wan 2.1 and 2.2 image
# folders use the same loader as the text one and cost seconds each.
@pytest.mark.parametrize("family", ["wan2.1-t2v", "wan2.2-i2v", "ltx-video"])
def test_a_lora_file_changes_the_video_and_scale_zero_gives_it_back(family: str, tmp_path: Path) -> None:
    """load_lora_weights(file) changes the video; adapter weight 0 and fuse_lora(lora_scale=0) restore it exactly."""
    mode = "text" if CLASSES[family][0] else "image"
    pipe = load(family, build_tiny(family, tmp_path / family), mode)
    lora = build_tiny_lora(family, tmp_path / "lora")
    assert lora == tmp_path / "lora" / LORA_WEIGHT_NAME
    assert lora.is_file()
    base = generate(pipe, mode, seed=5)

    pipe.load_lora_weights(lora, adapter_name="tiny")  # the file itself
    styled = generate(pipe, mode, seed=5)
    assert not np.array_equal(styled, base)
    pipe.set_adapters(["tiny"], adapter_weights=[0.0])
    assert np.array_equal(generate(pipe, mode, seed=5), base)
    pipe.set_adapters(["tiny"], adapter_weights=[1.0])
    assert np.array_equal(generate(pipe, mode, seed=5), styled)
    pipe.fuse_lora(lora_scale=0.0)
    assert np.array_equal(generate(pipe, mode, seed=5), base)
    pipe.unfuse_lora()
    pipe.unload_lora_weights()
    assert np.array_equal(generate(pipe, mode, seed=5), base)

    pipe.load_lora_weights(str(lora.parent), weight_name=LORA_WEIGHT_NAME, adapter_name="again")  # folder + name
    assert np.array_equal(generate(pipe, mode, seed=5), styled)
    if family in WAN22_BOUNDARY_RATIO:  # the same file into the low-noise expert too
        pipe.load_lora_weights(lora, adapter_name="low", load_into_transformer_2=True)
        assert pipe.get_list_adapters() == {"transformer": ["again"], "transformer_2": ["low"]}
        assert not np.array_equal(generate(pipe, mode, seed=5), styled)


def test_the_lora_file(tmp_path: Path) -> None:
    """transformer.* lora_A / lora_B pairs of the asked rank, lora_B non-zero, the LoraConfig as metadata, seeded."""
    import json

    from safetensors import safe_open

    def read(seed: int, name: str) -> tuple[dict[str, Any], dict[str, str]]:
        with safe_open(build_tiny_lora("wan2.1-t2v", tmp_path / name, seed=seed, rank=2), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118 (not a dict)

    tensors, metadata = read(1, "a")
    assert tensors
    assert all(k.startswith("transformer.blocks.") and (".lora_A." in k or ".lora_B." in k) for k in tensors)
    assert {v.shape[0] for k, v in tensors.items() if ".lora_A." in k} == {2}
    assert all(v.abs().sum() > 0 for k, v in tensors.items() if ".lora_B." in k)
    config = json.loads(metadata["lora_adapter_metadata"])
    assert (config["transformer.r"], config["transformer.lora_alpha"]) == (2, 2)
    again, _ = read(1, "b")
    other, _ = read(2, "c")
    assert all(torch.equal(again[k], v) for k, v in tensors.items())
    assert not all(torch.equal(other[k], v) for k, v in tensors.items())


def test_no_lora_for_hunyuan(tmp_path: Path) -> None:
    """HunyuanVideo 1.5's pipelines have no load_lora_weights, so build_tiny_lora refuses them."""
    assert not hasattr(diffusers.HunyuanVideo15Pipeline, "load_lora_weights")
    with pytest.raises(ValueError, match="no LoRA loader"):
        build_tiny_lora("hunyuanvideo-1.5-t2v", tmp_path)
