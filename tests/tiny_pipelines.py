"""Tiny, randomly initialised diffusers video pipelines for tests: built from configs, never downloaded.

``build_tiny(family, folder)`` writes a folder that the engine's own loading code reads back with
``<PipelineClass>.from_pretrained(folder, dtype=torch.float32)`` and that generates a video on CPU in a fraction of a
second (once torch and diffusers are imported and warm). The weights are random, so the "video" is noise, but every
component has the real model's layout (same classes, latent channels, VAE compression, scheduler and conditioning
path), only scaled down: 40k to 175k parameters per pipeline. Nothing touches the Hugging Face hub.

diffusers 0.42 renamed ``torch_dtype=`` to ``dtype=``; the old spelling still loads but raises a ``FutureWarning``
("`torch_dtype` is deprecated and will be removed in version 1.0.0. Please use `dtype` instead.", module
``diffusers.utils.deprecation_utils``). ``<ImageClass>.from_pipe(pipe)`` casts every module, shared ones included, to
its own ``dtype=`` argument (float32 when omitted), so pass the text pipeline's dtype.

How each family's folder loads and what a call needs:

- ``wan2.1-t2v``: ``WanPipeline.from_pretrained(folder)``. Text only. UniPCMultistepScheduler (flow_prediction,
  use_flow_sigmas, flow_shift=3.0) as in Wan-AI/Wan2.1-T2V-1.3B-Diffusers. Sizes: height and width multiples of 16
  (VAE 8x spatial x transformer patch 2; else ValueError), num_frames = 4k + 1 (VAE 4x temporal; others are rounded
  down with a logged warning); smallest: 16x16, 1 frame.
- ``wan2.1-i2v``: ``WanImageToVideoPipeline.from_pretrained(folder)``; ``image=`` (a PIL image) is required. Adds
  ``image_encoder`` (CLIPVisionModel) and ``image_processor`` (CLIPImageProcessorPil, the variant that needs no
  torchvision); the transformer has ``image_dim`` (the CLIP hidden size) and ``added_kv_proj_dim`` (its own width), as
  in Wan-AI/Wan2.1-I2V-14B-480P-Diffusers. Same size rules as wan2.1-t2v.
- ``wan2.2-ti2v``: one folder saved as a ``WanPipeline`` with ``expand_timesteps=True`` and the Wan 2.2 VAE layout
  (z_dim 48, patch_size 2, 12 in/out channels, residual, 16x spatial, 4x temporal). Text: ``WanPipeline.from_pretrained
  (folder)``. Image: either ``WanImageToVideoPipeline.from_pipe(t2v_pipe)`` (shares the loaded modules, carries
  ``expand_timesteps=True`` over from the config) or ``WanImageToVideoPipeline.from_pretrained(folder)`` (reads
  ``expand_timesteps`` from model_index.json; image_encoder / image_processor stay None); both work and give the same
  video, ``from_pipe`` loads nothing twice. ``image=`` is optional only in the sense that the text path is another
  class. Scheduler: the same UniPC with flow_shift=5.0 (Wan2.2-TI2V-5B). Sizes: height and width multiples of 32
  (VAE 16x x patch 2); a multiple of 16 that is not one of 32 passes the pipelines' own check and is then rounded
  DOWN with only a logged warning (48x48 gives 32x32 frames), and 16 crashes; num_frames = 4k + 1; smallest 32x32.
- ``ltx-video``: ``LTXPipeline.from_pretrained(folder)``; image: ``LTXImageToVideoPipeline.from_pipe(pipe)`` or
  ``LTXImageToVideoPipeline.from_pretrained(folder)`` (same components; both work). FlowMatchEulerDiscreteScheduler
  with dynamic shifting as in Lightricks/LTX-Video. The VAE keeps the real 32x spatial / 8x temporal compression and
  timestep-conditioned decoding (LTX-Video 0.9.1+), so ``decode_timestep`` / ``decode_noise_scale`` are honoured.
  Sizes: height and width multiples of 32 (else ValueError), num_frames = 8k + 1 (others are silently floored: 13 gives
  9 frames); smallest 32x32, 1 frame. ``frame_rate`` only scales the RoPE time axis (default 25). The default
  ``output_type`` is "pil", not "np" as for Wan. ``num_inference_steps=1`` fails with this (the real) scheduler config:
  shift_terminal stretches the single sigma to 0/0 (numpy RuntimeWarning "invalid value encountered in divide", then
  IndexError), so LTX needs at least 2 steps.

The tokenizer is a from-scratch WordPiece one (lowercased, accents stripped, letters and digits as sub-words, so any
ASCII text tokenizes; other characters become ``<unk>``) that appends ``</s>``, pads with ``<pad>`` (id 0) and is saved
as a ``PreTrainedTokenizerFast`` (``TokenizersBackend`` in transformers 5) under ``tokenizer/``.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

FAMILIES = ("wan2.1-t2v", "wan2.1-i2v", "wan2.2-ti2v", "ltx-video")

TEXT_DIM = 16  # d_model of the tiny T5 text encoders, = the transformers' text_dim / caption_channels
CLIP_DIM = 8  # hidden size of the tiny CLIP vision encoder, = the Wan 2.1 I2V transformer's image_dim
# Whole words in the vocabulary; any other ASCII word is spelt out in single-letter pieces.
_WORDS = (
    "a an the of and in on with at to is are cat dog bird fish person man woman child city street beach "
    "sea sky forest mountain river car boat sun moon night day light red green blue white black walks "
    "runs flies swims dances video camera slow motion close up view blurry low quality"
)


def _tokenizer(model_max_length: int) -> Any:
    """A WordPiece tokenizer over a small vocabulary that appends ``</s>`` and pads with ``<pad>``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = list(string.ascii_lowercase + string.digits)
    tokens = ["<pad>", "</s>", "<unk>", *_WORDS.split(), *chars, *(f"##{c}" for c in chars), *".,!?;:'\"()-"]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    tok = Tokenizer(models.WordPiece(vocab, unk_token="<unk>", max_input_chars_per_word=100))
    tok.normalizer = normalizers.Sequence([normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=model_max_length,
        padding_side="right",
    )


def _t5_config(vocab_size: int) -> dict[str, Any]:
    """Keyword arguments for a one-layer T5-style encoder of width TEXT_DIM."""
    return {
        "vocab_size": vocab_size,
        "d_model": TEXT_DIM,
        "d_kv": 8,
        "d_ff": 32,
        "num_layers": 1,
        "num_decoder_layers": 1,
        "num_heads": 2,
        "relative_attention_num_buckets": 8,
        "relative_attention_max_distance": 32,
        "feed_forward_proj": "gated-gelu",
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
    }


def _wan_scheduler(flow_shift: float) -> Any:
    """UniPC in flow-prediction mode, as the Wan Diffusers repositories configure it."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=flow_shift)


def _wan_transformer(in_channels: int, out_channels: int, **extra: Any) -> Any:
    """A two-layer WanTransformer3DModel of width 16 (2 heads x 8)."""
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=in_channels,
        out_channels=out_channels,
        text_dim=TEXT_DIM,
        freq_dim=32,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        **extra,
    )


def _wan_parts(family: str) -> dict[str, Any]:
    """The components of a tiny Wan pipeline of ``family``."""
    from diffusers import AutoencoderKLWan
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    tokenizer = _tokenizer(512)
    text_encoder = UMT5EncoderModel(UMT5Config(**_t5_config(len(tokenizer))))
    parts: dict[str, Any] = {"tokenizer": tokenizer, "text_encoder": text_encoder}

    def vae(z_dim: int, **extra: Any) -> Any:
        return AutoencoderKLWan(
            base_dim=4,
            z_dim=z_dim,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
            latents_mean=[0.0] * z_dim,
            latents_std=[1.0] * z_dim,
            **extra,
        )

    if family == "wan2.2-ti2v":
        z_dim = 48
        parts["vae"] = vae(
            z_dim,
            is_residual=True,
            in_channels=12,
            out_channels=12,
            patch_size=2,
            scale_factor_spatial=16,
            scale_factor_temporal=4,
        )
        parts["transformer"] = _wan_transformer(z_dim, z_dim)
        parts["scheduler"] = _wan_scheduler(5.0)
        parts["expand_timesteps"] = True
        return parts
    z_dim = 16
    parts["vae"] = vae(z_dim)
    parts["scheduler"] = _wan_scheduler(3.0)
    if family == "wan2.1-t2v":
        parts["transformer"] = _wan_transformer(z_dim, z_dim)
        return parts
    # I2V: the latents are concatenated with a 4-channel frame mask and the image's latents (16 + 4 + 16 = 36).
    parts["transformer"] = _wan_transformer(z_dim + 4 + z_dim, z_dim, image_dim=CLIP_DIM, added_kv_proj_dim=16)
    parts["image_encoder"] = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=CLIP_DIM,
            intermediate_size=16,
            projection_dim=CLIP_DIM,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
    )
    parts["image_processor"] = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return parts


def _ltx_parts() -> dict[str, Any]:
    """The components of a tiny LTX-Video pipeline."""
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    tokenizer = _tokenizer(128)
    text_encoder = T5EncoderModel(T5Config(**_t5_config(len(tokenizer))))
    latent_channels = 8
    transformer = LTXVideoTransformer3DModel(
        in_channels=latent_channels,
        out_channels=latent_channels,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        num_layers=1,
        caption_channels=TEXT_DIM,
    )
    # patch 4 x 2**3 = 32x spatial, 2**3 = 8x temporal: the real LTX-Video compression.
    vae = AutoencoderKLLTXVideo(
        latent_channels=latent_channels,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=True,
        patch_size=4,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=1024,
        base_shift=0.95,
        max_image_seq_len=4096,
        max_shift=2.05,
        shift=1.0,
        shift_terminal=0.1,
        use_dynamic_shifting=True,
    )
    return {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "transformer": transformer,
        "vae": vae,
        "scheduler": scheduler,
    }


def build_tiny(family: str, folder: Path, *, seed: int = 0) -> Path:
    """Build a tiny random pipeline of ``family`` and save it to ``folder`` (from_pretrained-loadable); return it."""
    import torch
    from diffusers import LTXPipeline, WanImageToVideoPipeline, WanPipeline

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r} (expected one of {', '.join(FAMILIES)})")
    torch.manual_seed(seed)
    pipe: Any
    if family == "ltx-video":
        pipe = LTXPipeline(**_ltx_parts())
    elif family == "wan2.1-i2v":
        pipe = WanImageToVideoPipeline(**_wan_parts(family))
    else:
        pipe = WanPipeline(**_wan_parts(family))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(folder)
    return folder
