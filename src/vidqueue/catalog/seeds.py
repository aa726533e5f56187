"""The two models of the source documents, as CONTRACT section 6 defines them."""

from __future__ import annotations

from vidqueue.catalog.models import ModelSpec
from vidqueue.catalog.params import Param

PROMPT_MAX = 2500

PROMPT = Param(
    name="prompt",
    display_name="Prompt",
    description=f"Positive text prompt describing the video. Cannot exceed {PROMPT_MAX} characters.",
    type="string",
    required=True,
    min_length=1,
    max_length=PROMPT_MAX,
    pattern=r"\S",
    pattern_message="must not be only whitespace",
)

NEGATIVE_PROMPT = Param(
    name="negative_prompt",
    display_name="Negative prompt",
    description=f"Negative text prompt: what to avoid. Cannot exceed {PROMPT_MAX} characters.",
    type="string",
    default="",
    max_length=PROMPT_MAX,
)

DURATION = Param(
    name="duration",
    display_name="Duration",
    description='Video length in seconds: "5" or "10" (the numbers 5 and 10 are accepted as well).',
    type="string",
    default="5",
    options=("5", "10"),
    accept_numbers_for_options=True,
)

CFG_SCALE = Param(
    name="cfg_scale",
    display_name="CFG scale",
    description="Flexibility in video generation: the higher the value, the less freedom the model takes "
    'and the closer it follows the prompt. Also accepted nested, as {"cfg": {"scale": x}}.',
    type="number",
    default=0.5,
    min=0.0,
    max=1.0,
    step=0.1,
    alias=("cfg", "scale"),
)

IMAGE = Param(
    name="image",
    display_name="Image",
    description="Reference image for image-to-video: an http(s) URL or base64 (raw or a data: URI) of a "
    ".jpg/.jpeg/.png, at most 10 MB, width and height at least 300 px, aspect ratio between 1:2.5 and 2.5:1. "
    "One image.",
    type="string",
    is_image=True,
)

MODE = Param(
    name="mode",
    display_name="Mode",
    description='Generation mode: "pro".',
    type="string",
    default="pro",
    options=("pro",),
)

ASPECT_RATIO = Param(
    name="aspect_ratio",
    display_name="Aspect ratio",
    description='Frame shape: "16:9" (landscape), "9:16" (portrait) or "1:1" (square).',
    type="string",
    default="16:9",
    options=("16:9", "9:16", "1:1"),
)

KLING_V2_5_TURBO = ModelSpec(
    id="kling-v2-5-turbo",
    brief_description="Kling 2.5 Turbo: text to video, or image to video when an image is given.",
    detailed_description="""\
# kling-v2-5-turbo

Kling AI's latest-generation video model. It turns a text description, or a reference image, into a polished,
high-fidelity clip with cinematic camera work, smooth realistic motion and a consistent visual style.

- **Prompt understanding:** handles complex, multi-step instructions and cause and effect.
- **Motion:** physics-aware dynamics and stable camera control for fluid action scenes.
- **Consistency:** style, lighting and texture hold steady across frames.

## Modes

- **Text to video:** send `prompt`.
- **Image to video:** send `prompt` and `image` (an http(s) URL or base64 of a .jpg/.jpeg/.png, at most 10 MB,
  at least 300 px on each side, aspect ratio between 1:2.5 and 2.5:1).

## Parameters

`duration` is `"5"` or `"10"` seconds; `cfg_scale` runs from 0 to 1 in steps of 0.1 (higher follows the prompt
more closely); `mode` is `"pro"`.
""",
    params=(PROMPT, IMAGE, DURATION, NEGATIVE_PROMPT, MODE, CFG_SCALE),
    modalities={"input": ["text", "image"], "output": ["video"]},
    model_type="video-generation",
    tags=("video-generation", "text-to-video", "image-to-video", "kling"),
    external_provider="kling",
    # The source documents publish no price; an operator who bills sets one.
    price_info=None,
    created_at=1758844800,  # 2025-09-26
    updated_at=1758844800,
)

KLING_TEXT2VIDEO_V2_MASTER = ModelSpec(
    id="Kling-Text2Video-V2-Master",
    brief_description="Kling 2.0 Master: text to video with strong motion, aesthetics and prompt adherence.",
    detailed_description="""\
# Kling-Text2Video-V2-Master

A text-to-video model that creates imaginative videos from text descriptions, with excellent dynamics,
aesthetics and prompt adherence.

- **Enhanced dynamics:** improved motion and fluidity.
- **Superior aesthetics:** high visual quality and artistic style.
- **Strong prompt adherence:** accurate reading of the description.
- **Aspect ratios:** 16:9 (landscape, default), 9:16 (portrait) and 1:1 (square).
- **Duration:** 5 or 10 seconds.

## Tips

- Use specific, detailed prompts.
- Use `negative_prompt` to avoid unwanted elements, such as "blurry, low quality, distorted".
- Choose the aspect ratio for the target platform, and tune `cfg_scale` (0 to 1, step 0.1) for how closely the
  video follows the prompt. The nested spelling `{"cfg": {"scale": 0.5}}` is accepted too.
""",
    params=(PROMPT, NEGATIVE_PROMPT, DURATION, ASPECT_RATIO, CFG_SCALE),
    modalities={"input": ["text"], "output": ["video"]},
    model_type="video-generation",
    tags=("video-generation", "text-to-video", "kling"),
    external_provider="kling",
    price_info=None,
    created_at=1745366400,  # 2025-04-23
    updated_at=1745366400,
)

SEED_MODELS: tuple[ModelSpec, ...] = (KLING_V2_5_TURBO, KLING_TEXT2VIDEO_V2_MASTER)
