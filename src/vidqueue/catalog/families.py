"""Open-weight model families (Wan, LTX-Video, HunyuanVideo): their payload parameters and the built-in models of each.

A family fixes what a payload may hold; a model of the family adds where its weights are and its native settings
(steps, frame rate, frame sizes). The diffusers engine reads the same facts from the model's ``LocalModel``.
"""

from __future__ import annotations

from typing import Literal

from vidqueue.catalog.models import FAMILIES, Family, LocalModel, ModelSpec
from vidqueue.catalog.params import Param
from vidqueue.catalog.seeds import ASPECT_RATIO, CFG_SCALE, DURATION, IMAGE, NEGATIVE_PROMPT, PROMPT

__all__ = [
    "BUILT_IN",
    "BUILT_IN_MODELS",
    "FAMILIES",
    "FAMILY_DEFAULTS",
    "FRAME_STEP",
    "GUIDANCE_PER_CFG",
    "IMAGE_USE",
    "SIZE_MULTIPLE",
    "Family",
    "LocalModel",
    "local_model",
    "local_spec",
]

ImageUse = Literal["none", "optional", "required"]

# How each family takes an input image.
IMAGE_USE: dict[Family, ImageUse] = {
    "wan2.1-t2v": "none",
    "wan2.1-i2v": "required",
    "wan2.2-ti2v": "optional",
    "wan2.2-t2v": "none",
    "wan2.2-i2v": "required",
    "ltx-video": "optional",
    "hunyuanvideo-1.5-t2v": "none",
    "hunyuanvideo-1.5-i2v": "required",
}

MAX_STEPS = 200
SEED_MAX = 2**32 - 1

SEED = Param(
    name="seed",
    display_name="Seed",
    description=f"Random seed (0 to {SEED_MAX}); the same seed, payload and model give the same video. "
    "Without one, a random seed is drawn.",
    type="integer",
    min=0,
    max=SEED_MAX,
)

REQUIRED_IMAGE = Param(
    name="image",
    display_name="Image",
    description=IMAGE.description.replace("Reference image for image-to-video", "The first frame (required)"),
    type="string",
    required=True,
    is_image=True,
)


# LTX-Video's scheduler (shift_terminal) cannot run a single step.
MIN_STEPS: dict[Family, int] = {family: 2 if family == "ltx-video" else 1 for family in FAMILIES}


def steps_param(default: int, minimum: int = 1, maximum: int = MAX_STEPS) -> Param:
    """num_inference_steps with a model's own default and bounds."""
    return Param(
        name="num_inference_steps",
        display_name="Inference steps",
        description=f"Denoising steps ({minimum} to {maximum}): more are slower and usually sharper.",
        type="integer",
        default=default,
        min=minimum,
        max=maximum,
    )


def family_params(family: Family, steps: int, max_steps: int | None = None) -> tuple[Param, ...]:
    """The payload parameters of a family's models: the Kling-style ones, the image where taken, seed, steps."""
    image = {"none": (), "optional": (IMAGE,), "required": (REQUIRED_IMAGE,)}[IMAGE_USE[family]]
    minimum = MIN_STEPS[family]
    maximum = max(minimum, min(max_steps or MAX_STEPS, MAX_STEPS))
    steps_rule = steps_param(min(max(steps, minimum), maximum), minimum, maximum)
    return (PROMPT, *image, NEGATIVE_PROMPT, DURATION, ASPECT_RATIO, CFG_SCALE, SEED, steps_rule)


WAN_480P = {"16:9": (832, 480), "9:16": (480, 832), "1:1": (624, 624)}
WAN_720P = {"16:9": (1280, 704), "9:16": (704, 1280), "1:1": (960, 960)}
WAN22_720P = {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (960, 960)}
LTX_SIZES = {"16:9": (768, 512), "9:16": (512, 768), "1:1": (640, 640)}
HUNYUAN_480P = {"16:9": (848, 480), "9:16": (480, 848), "1:1": (640, 640)}

BUILT_IN: dict[str, LocalModel] = {
    "wan2.1-t2v-1.3b": LocalModel("wan2.1-t2v", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", 50, 16, WAN_480P),
    "wan2.1-t2v-14b": LocalModel("wan2.1-t2v", "Wan-AI/Wan2.1-T2V-14B-Diffusers", 50, 16, WAN_720P),
    "wan2.1-i2v-14b-480p": LocalModel("wan2.1-i2v", "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", 40, 16, WAN_480P),
    "wan2.2-ti2v-5b": LocalModel("wan2.2-ti2v", "Wan-AI/Wan2.2-TI2V-5B-Diffusers", 50, 24, WAN_720P),
    "wan2.2-t2v-a14b": LocalModel("wan2.2-t2v", "Wan-AI/Wan2.2-T2V-A14B-Diffusers", 40, 16, WAN22_720P),
    "wan2.2-i2v-a14b": LocalModel("wan2.2-i2v", "Wan-AI/Wan2.2-I2V-A14B-Diffusers", 40, 16, WAN22_720P),
    "ltx-video": LocalModel("ltx-video", "Lightricks/LTX-Video", 50, 24, LTX_SIZES),
    "hunyuanvideo-1.5-t2v": LocalModel(
        "hunyuanvideo-1.5-t2v", "hunyuanvideo-community/HunyuanVideo-1.5-480p_t2v", 50, 24, HUNYUAN_480P
    ),
    "hunyuanvideo-1.5-i2v": LocalModel(
        "hunyuanvideo-1.5-i2v", "hunyuanvideo-community/HunyuanVideo-1.5-480p_i2v", 50, 24, HUNYUAN_480P
    ),
}

# A family's own settings, for a configured model that gives no steps, fps or sizes.
FAMILY_DEFAULTS: dict[Family, LocalModel] = {
    "wan2.1-t2v": BUILT_IN["wan2.1-t2v-1.3b"],
    "wan2.1-i2v": BUILT_IN["wan2.1-i2v-14b-480p"],
    "wan2.2-ti2v": BUILT_IN["wan2.2-ti2v-5b"],
    "wan2.2-t2v": BUILT_IN["wan2.2-t2v-a14b"],
    "wan2.2-i2v": BUILT_IN["wan2.2-i2v-a14b"],
    "ltx-video": BUILT_IN["ltx-video"],
    "hunyuanvideo-1.5-t2v": BUILT_IN["hunyuanvideo-1.5-t2v"],
    "hunyuanvideo-1.5-i2v": BUILT_IN["hunyuanvideo-1.5-i2v"],
}

# Frame sizes must be multiples of this (the VAE's spatial compression times the transformer's patch size),
# and frame counts k * FRAME_STEP + 1 (the VAE's temporal compression).
# HunyuanVideo 1.5's VAE compresses 16x with a transformer patch of 1.
SIZE_MULTIPLE: dict[Family, int] = {
    "wan2.1-t2v": 16,
    "wan2.1-i2v": 16,
    "wan2.2-ti2v": 32,
    "wan2.2-t2v": 16,
    "wan2.2-i2v": 16,
    "ltx-video": 32,
    "hunyuanvideo-1.5-t2v": 16,
    "hunyuanvideo-1.5-i2v": 16,
}
FRAME_STEP: dict[Family, int] = {family: 8 if family == "ltx-video" else 4 for family in FAMILIES}

_DESCRIPTIONS: dict[Family, str] = {
    "wan2.1-t2v": "Wan 2.1 text to video, open weights, generated on this server's GPUs.",
    "wan2.1-i2v": "Wan 2.1 image to video: the image is the first frame; open weights, generated locally.",
    "wan2.2-ti2v": "Wan 2.2 TI2V: text to video, or image to video when an image is given; generated locally.",
    "wan2.2-t2v": "Wan 2.2 A14B text to video: two 14B experts (high and low noise), generated locally.",
    "wan2.2-i2v": "Wan 2.2 A14B image to video: the image is the first frame; two 14B experts, generated locally.",
    "ltx-video": "LTX-Video: text to video, or image to video when an image is given; generated locally.",
    "hunyuanvideo-1.5-t2v": "HunyuanVideo 1.5 (8.3B) text to video, open weights, generated locally.",
    "hunyuanvideo-1.5-i2v": "HunyuanVideo 1.5 (8.3B) image to video: the image is the first frame; generated locally.",
}

# guidance_scale = GUIDANCE_PER_CFG * cfg_scale: the default cfg_scale 0.5 gives the family's native guidance.
# (Wan 2.2 A14B: 4.0 for text, 3.5 for image; HunyuanVideo 1.5: 6.0, as their model cards run them.)
GUIDANCE_PER_CFG: dict[Family, float] = {
    "wan2.1-t2v": 10.0,
    "wan2.1-i2v": 10.0,
    "wan2.2-ti2v": 10.0,
    "wan2.2-t2v": 8.0,
    "wan2.2-i2v": 7.0,
    "ltx-video": 6.0,
    "hunyuanvideo-1.5-t2v": 12.0,
    "hunyuanvideo-1.5-i2v": 12.0,
}
# The low-noise expert's guidance (``guidance_scale_2``) as a share of the high-noise one's (Wan 2.2 A14B: 3.0
# against 4.0 for text; the same 3.5 for image).
GUIDANCE_2_SHARE: dict[Family, float] = {"wan2.2-t2v": 0.75, "wan2.2-i2v": 1.0}


def local_spec(model_id: str, local: LocalModel, *, created_at: int = 1_767_225_600) -> ModelSpec:
    """The catalog entry of a local model: its family's parameters and a description of its settings."""
    sizes = ", ".join(f"{ratio} → {w}x{h}" for ratio, (w, h) in local.sizes.items())
    takes_image = IMAGE_USE[local.family] != "none"
    per_cfg = GUIDANCE_PER_CFG[local.family]
    bound = f", at most {local.max_steps}" if local.max_steps else ""
    if local.guidance is not None:
        guidance = f"fixed at {local.guidance:g} by this server's configuration; `cfg_scale` is ignored."
    else:
        guidance = (
            f"guidance scale = {per_cfg:g} times `cfg_scale` (the default 0.5 gives the family's native "
            f"{per_cfg / 2:g}); at 1 or less classifier-free guidance is off, which halves the work."
        )
    detailed = f"""\
# {model_id}

{_DESCRIPTIONS[local.family]}

- **Family:** `{local.family}`; weights `{local.weights}`.
- **Frames:** `duration` seconds at {local.fps} fps, rounded to the family's frame rule ({FRAME_STEP[local.family]}k+1).
- **Sizes:** {sizes}.
- **Steps:** {local.steps} by default (`num_inference_steps`{bound}); `seed` makes a run repeatable.
- **Guidance:** {guidance}
"""
    return ModelSpec(
        id=model_id,
        brief_description=_DESCRIPTIONS[local.family],
        detailed_description=detailed,
        params=family_params(local.family, local.steps, local.max_steps),
        modalities={"input": ["text", "image"] if takes_image else ["text"], "output": ["video"]},
        model_type="video-generation",
        tags=("video-generation", "text-to-video", *(("image-to-video",) if takes_image else ()), "open-weights"),
        external_provider=None,
        price_info=None,
        created_at=created_at,
        updated_at=created_at,
        local=local,
    )


BUILT_IN_MODELS: tuple[ModelSpec, ...] = tuple(local_spec(mid, local) for mid, local in BUILT_IN.items())


def local_model(
    model_id: str,
    family: Family,
    weights: str,
    *,
    steps: int | None = None,
    fps: int | None = None,
    sizes: dict[str, tuple[int, int]] | None = None,
    max_steps: int | None = None,
    guidance: float | None = None,
) -> LocalModel:
    """A local model from a family's defaults and what was given; ValueError names a size the family cannot make."""
    base = FAMILY_DEFAULTS[family]
    merged = {**base.sizes, **(sizes or {})}
    multiple = SIZE_MULTIPLE[family]
    for ratio, (width, height) in merged.items():
        if width % multiple or height % multiple:
            raise ValueError(
                f"model {model_id}: size {width}x{height} for {ratio} must be made of multiples of {multiple} "
                f"for family {family}"
            )
    default_steps = steps or base.steps
    if max_steps is not None and default_steps > max_steps:
        if steps is not None:
            raise ValueError(f"model {model_id}: steps ({steps}) must not exceed max_steps ({max_steps})")
        default_steps = max_steps  # the family's default is above the bound: the bound becomes the default
    return LocalModel(family, weights, default_steps, fps or base.fps, merged, max_steps=max_steps, guidance=guidance)
