"""Tiny, randomly initialised diffusers video pipelines for tests: built from configs, never downloaded.

``build_tiny(family, folder)`` writes a folder that the engine's own loading code reads back with
``<PipelineClass>.from_pretrained(folder, dtype=torch.float32)`` and that generates a video on CPU in a fraction of a
second (once torch and diffusers are imported and warm). The weights are random, so the "video" is noise, but every
component has the real model's layout (same classes, latent channels, VAE compression, scheduler and conditioning
path), only scaled down: 40k to 175k parameters per pipeline, except HunyuanVideo 1.5 (4.5M, see below). Nothing touches
the Hugging Face hub.

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

- ``wan2.2-t2v``: Wan2.2-T2V-A14B layout: ``WanPipeline.from_pretrained(folder)`` with two experts, ``transformer``
  (high noise) and ``transformer_2`` (low noise; same layout, different random weights) and ``boundary_ratio=0.875`` in
  model_index.json, the Wan 2.1 VAE (z_dim 16, 8x) and UniPC with flow_shift=3.0 (what diffusers' conversion script
  writes for the A14B Diffusers repositories; the original Wan 2.2 code samples with shift 12.0). Each step runs
  ``transformer`` if ``t >= boundary_ratio * num_train_timesteps`` (875; the comparison is >=, so t=900 of a 4-step
  schedule is high-noise), else ``transformer_2``. With this scheduler 2 steps are t = 999 (transformer) and 750
  (transformer_2), 4 steps 999, 900 | 750, 500, and 1 step runs only ``transformer``. ``guidance_scale`` guides the
  high-noise steps, ``guidance_scale_2`` (call argument; None = same as guidance_scale) the low-noise ones; both
  experts are called twice per step under CFG. Same size and frame rules, outputs and ``callback_on_step_end`` as
  wan2.1-t2v. There is no image twin: ``WanImageToVideoPipeline.from_pipe(pipe)`` builds, but the call fails in the
  transformer (RuntimeError: 16 input channels, the I2V path feeds 36).
- ``wan2.2-i2v``: Wan2.2-I2V-A14B layout: ``WanImageToVideoPipeline.from_pretrained(folder)``; ``image=`` (a PIL image)
  is required (TypeError without it). Two experts of in_channels 36 (16 noise + 4 mask + 16 image latents) and no
  image_dim / added_kv_proj_dim: no image_encoder / image_processor (both None, the image only enters through the
  VAE). ``boundary_ratio=0.9`` (t >= 900 -> ``transformer``; 2 steps: 999 | 750), ``guidance_scale_2`` as above, UniPC
  flow_shift=3.0 (original code: 5.0). Sizes and frames as wan2.1-i2v.
- ``hunyuanvideo-1.5-t2v``: ``HunyuanVideo15Pipeline.from_pretrained(folder)`` (480p_t2v layout): text_encoder
  Qwen2_5_VLTextModel + tokenizer Qwen2Tokenizer (see below), text_encoder_2 T5EncoderModel + tokenizer_2
  ByT5Tokenizer (only for quoted text: the prompt's "..." / “...” parts are encoded as glyph text, other prompts get
  zeros), transformer HunyuanVideo15Transformer3DModel (in_channels 2 * 8 + 1, target_size 48), VAE
  AutoencoderKLHunyuanVideo15 (8 latent channels instead of 32, but the real 16x spatial / 4x temporal compression),
  FlowMatchEulerDiscreteScheduler(shift=5.0) and guider ClassifierFreeGuidance(guidance_scale=6.0), as in
  hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v. A call takes prompt, negative_prompt, height, width,
  num_frames, num_inference_steps, generator, output_type (default "np"). It has NO ``guidance_scale`` and NO
  ``callback_on_step_end`` argument (TypeError): guidance lives in the guider, a pipeline component that persists
  across calls: set ``pipe.guider = pipe.guider.new(guidance_scale=g)`` before a call (``new`` copies the config with
  overrides); ``guidance_scale=1.0`` (or ``pipe.guider.disable()``) turns CFG off: the negative prompt is not even
  encoded and the transformer runs once per step instead of twice. Every guider construction (``new`` too) logs
  "Guiders are currently an experimental feature" through diffusers' logger (not a Python warning). Sizes: height and
  width are floored to multiples of 16 without any message (40x48 gives 32x48 frames); num_frames = 4k + 1, others
  silently floored (10 gives 9); smallest 16x16, 1 frame; height=width=None picks a 16:9 bucket of target_size (32x48
  here, 480p for the real one). output_type "np" -> (1, F, H, W, 3) float32 in [0, 1]; "pt" -> a torch tensor
  (1, F, 3, H, W) in [0, 1]; "latent" -> the latents (1, 8, (F - 1) / 4 + 1, H / 16, W / 16); "pil" -> lists of PIL
  images. The transformer has 4.3M parameters (18 MB on disk): its ByT5 projection is a 2048-wide MLP whatever the
  sizes (4.2M).
  ``HunyuanVideo15ImageToVideoPipeline.from_pipe(pipe)`` fails (ValueError: image_encoder and feature_extractor
  missing); with ``image_encoder=`` and ``feature_extractor=`` passed it runs, but with the T2V transformer (the real
  480p_i2v is another checkpoint), so the image family has its own folder.
- ``hunyuanvideo-1.5-i2v``: ``HunyuanVideo15ImageToVideoPipeline.from_pretrained(folder)`` (480p_i2v layout): the same
  components plus image_encoder SiglipVisionModel (16 tokens of width 16 = the transformer's image_embed_dim; the real
  one gives 729 x 1152) and feature_extractor SiglipImageProcessorPil (32x32, needs no torchvision); transformer
  task_type "i2v". ``image=`` must be a PIL image (TypeError without it, ValueError for an array). There are NO
  ``height`` / ``width`` arguments (TypeError): the output size is the bucket of ``transformer.config.target_size``
  (48 here, 640 for 480p) closest to the image's aspect ratio, and the image is resized and centre-cropped to it: a
  40x48 (h x w) image gives 48x48 frames, a 40x80 one 32x64, a square one 48x48. Guidance, frames, output types as
  hunyuanvideo-1.5-t2v; the first latent frame is the image's. ``HunyuanVideo15Pipeline.from_pipe(i2v_pipe)`` works
  (drops image_encoder / feature_extractor) and gives a text pipeline on the I2V transformer.

LoRA: ``build_tiny_lora(family, folder)`` writes ``folder/tiny_lora.safetensors`` for the Wan families and ltx-video
(HunyuanVideo 1.5's pipelines have no ``load_lora_weights`` in diffusers 0.42) and returns the file.
``pipe.load_lora_weights(file, adapter_name=name)`` takes the file path itself (str or Path) as well as
``(folder, weight_name="tiny_lora.safetensors", adapter_name=name)``; a local folder without ``weight_name`` loads its
.safetensors file (the first, with a logged warning, when there are several). Then
``pipe.set_adapters([name], adapter_weights=[w])`` scales it (0.0 gives exactly the base video),
``pipe.fuse_lora(lora_scale=w)`` / ``unfuse_lora()`` bake it in and out (0.0: the base video again) and
``unload_lora_weights()`` removes it. For Wan 2.2 A14B it loads into ``transformer`` only; ``load_lora_weights(file,
adapter_name=other, load_into_transformer_2=True)`` loads the same file into the low-noise expert (same layout). A Wan
2.1 I2V LoRA must also carry the image projections (add_k_proj / add_v_proj): diffusers pads a T2V-only file with zero
ones, and when the file's LoraConfig metadata does not list them peft raises a ``RuntimeWarning`` (an error under this
project's pytest settings); ``build_tiny_lora("wan2.1-i2v", ...)`` targets them. The file's tensors are reproducible
per seed, its bytes are not (safetensors writes its two metadata entries in hash order).

The Wan / LTX tokenizer is a from-scratch WordPiece one (lowercased, accents stripped, letters and digits as
sub-words, so any ASCII text tokenizes; other characters become ``<unk>``) that appends ``</s>``, pads with ``<pad>``
(id 0) and is saved as a ``PreTrainedTokenizerFast`` (``TokenizersBackend`` in transformers 5) under ``tokenizer/``.

HunyuanVideo 1.5's tokenizer is a real ``Qwen2Tokenizer`` (byte-level BPE, pad / eos ``<|endoftext|>``, right padding)
over the 256 byte symbols plus whole-word merges for the chat roles, the pipeline's system message and the words
above, with ``<|im_start|>`` / ``<|im_end|>`` and a Qwen2.5-VL-style chat template. The pipeline renders
[system, user] through ``apply_chat_template(..., padding="max_length", max_length=1000 + 108)`` and drops the first
``crop_start`` = 108 tokens (``prompt_template_encode_start_idx``, hard-coded like the 1000): the system block and the
user header take exactly 108 tokens here, as with the real tokenizer (``build_tiny`` checks it), so what the
transformer sees starts at the prompt. Any text tokenizes (byte by byte where no merge applies).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

FAMILIES = (
    "wan2.1-t2v",
    "wan2.1-i2v",
    "wan2.2-ti2v",
    "ltx-video",
    "wan2.2-t2v",
    "wan2.2-i2v",
    "hunyuanvideo-1.5-t2v",
    "hunyuanvideo-1.5-i2v",
)
# The families whose pipeline class loads LoRAs (``load_lora_weights``); HunyuanVideo 1.5's pipelines have no LoRA
# loader in diffusers 0.42.
LORA_FAMILIES = ("wan2.1-t2v", "wan2.1-i2v", "wan2.2-ti2v", "ltx-video", "wan2.2-t2v", "wan2.2-i2v")
LORA_WEIGHT_NAME = "tiny_lora.safetensors"

TEXT_DIM = 16  # d_model of the tiny T5 / Qwen text encoders, = the transformers' text_dim / caption_channels
CLIP_DIM = 8  # hidden size of the tiny CLIP vision encoder, = the Wan 2.1 I2V transformer's image_dim
SIGLIP_DIM = 16  # hidden size of the tiny SigLIP vision encoder, = the HunyuanVideo 1.5 transformer's image_embed_dim
# Wan 2.2 A14B: transformer (high-noise expert) runs while t >= boundary_ratio * 1000, transformer_2 below.
WAN22_BOUNDARY_RATIO = {"wan2.2-t2v": 0.875, "wan2.2-i2v": 0.9}
HUNYUAN_TARGET_SIZE = 48  # transformer.config.target_size (640 for 480p): the I2V output size bucket, in pixels
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


def _wan_transformer_for(family: str) -> Any:
    """The (first) tiny transformer of the Wan ``family``: in/out channels and image conditioning as the real one."""
    if family == "wan2.2-ti2v":
        return _wan_transformer(48, 48)
    if family == "wan2.1-i2v":
        # The latents are concatenated with a 4-channel frame mask and the image's latents (16 + 4 + 16 = 36).
        return _wan_transformer(16 + 4 + 16, 16, image_dim=CLIP_DIM, added_kv_proj_dim=16)
    if family == "wan2.2-i2v":
        return _wan_transformer(16 + 4 + 16, 16)  # the same 36 channels, but no CLIP image embedding
    return _wan_transformer(16, 16)


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
        parts["transformer"] = _wan_transformer_for(family)
        parts["scheduler"] = _wan_scheduler(5.0)
        parts["expand_timesteps"] = True
        return parts
    z_dim = 16
    parts["vae"] = vae(z_dim)
    # Wan 2.1 and the Wan 2.2 A14B Diffusers repositories all ship flow_shift=3.0 (diffusers' conversion script); the
    # original Wan 2.2 code samples A14B with shift 12.0 (T2V) / 5.0 (I2V).
    parts["scheduler"] = _wan_scheduler(3.0)
    parts["transformer"] = _wan_transformer_for(family)
    if family in WAN22_BOUNDARY_RATIO:
        # The low-noise expert: same layout, the next draws of the seeded generator, so different weights.
        parts["transformer_2"] = _wan_transformer_for(family)
        parts["boundary_ratio"] = WAN22_BOUNDARY_RATIO[family]
    if family != "wan2.1-i2v":
        return parts
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


# Qwen2.5-VL's chat template, reduced to the plain-string messages HunyuanVideo 1.5 sends.
_QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _qwen_tokenizer() -> Any:
    """A byte-level BPE ``Qwen2Tokenizer`` whose chat-template prefix is exactly the pipeline's ``crop_start`` tokens.

    The vocabulary is the 256 byte symbols plus whole-word merges for the chat roles, HunyuanVideo 1.5's system message
    and ``_WORDS``, so any text tokenizes (byte by byte where no merge applies) and the system block + "user" header
    takes the same 108 tokens as with the real Qwen2.5-VL tokenizer; the pipeline crops exactly those away.
    """
    import inspect

    from diffusers import HunyuanVideo15Pipeline
    from tokenizers import Tokenizer, models
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    defaults = inspect.signature(HunyuanVideo15Pipeline._get_mllm_prompt_embeds).parameters
    system_message, crop_start = defaults["system_message"].default, defaults["crop_start"].default
    byte_symbol = bytes_to_unicode()
    vocab = {byte_symbol[b]: b for b in range(256)}
    # Qwen's own pre-tokenizer (split regex + byte-level mapping) cuts the texts into the words to merge.
    pre_tokenizer = Qwen2Tokenizer(vocab=dict(vocab)).backend_tokenizer.pre_tokenizer
    texts = ["system", "user", "assistant", "\n", system_message, *(f" {w}" for w in _WORDS.split())]
    words = dict.fromkeys(piece for text in texts for piece, _ in pre_tokenizer.pre_tokenize_str(text))
    merges: list[tuple[str, str]] = []
    # Add merges until every word is one token (BPE applies merges by rank, so a later word can need extra ones).
    while True:
        bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges)).model
        split = next((toks for w in words if len(toks := [t.value for t in bpe.tokenize(w)]) > 1), None)
        if split is None:
            break
        left = split[0]
        for right in split[1:]:
            merges.append((left, right))
            vocab.setdefault(left + right, len(vocab))
            left += right
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        padding_side="right",
        model_max_length=131072,
        extra_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tokenizer.chat_template = _QWEN_CHAT_TEMPLATE
    ids = tokenizer.apply_chat_template(
        [{"role": "system", "content": system_message}, {"role": "user", "content": "x"}], tokenize=True
    )["input_ids"]
    if tokenizer.convert_ids_to_tokens(ids[crop_start - 3 : crop_start + 1]) != [
        "<|im_start|>",
        "user",
        byte_symbol[ord("\n")],
        "x",
    ]:
        raise RuntimeError(f"the chat template's system block + user header is not {crop_start} tokens long")
    return tokenizer


def _hunyuan_parts(family: str) -> dict[str, Any]:
    """The components of a tiny HunyuanVideo 1.5 pipeline of ``family`` (480p layout)."""
    from diffusers import (
        AutoencoderKLHunyuanVideo15,
        ClassifierFreeGuidance,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideo15Transformer3DModel,
    )
    from transformers import (
        ByT5Tokenizer,
        Qwen2_5_VLTextConfig,
        Qwen2_5_VLTextModel,
        SiglipImageProcessorPil,
        SiglipVisionConfig,
        SiglipVisionModel,
        T5Config,
        T5EncoderModel,
    )

    tokenizer = _qwen_tokenizer()
    text_encoder = Qwen2_5_VLTextModel(
        Qwen2_5_VLTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_DIM,
            intermediate_size=32,
            num_hidden_layers=3,  # the pipeline takes hidden_states[-3]: a layer's output, not the embeddings
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [1, 1, 2]},
            bos_token_id=None,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    tokenizer_2 = ByT5Tokenizer()  # bytes + 3 specials + 125 extra ids; needs no vocabulary file
    text_encoder_2 = T5EncoderModel(T5Config(**_t5_config(len(tokenizer_2))))
    latent_channels = 8  # 32 in the real VAE
    # 5 blocks: 4 spatial halvings (16x) of which the last 2 also halve time (4x): the real compression.
    vae = AutoencoderKLHunyuanVideo15(
        latent_channels=latent_channels, block_out_channels=(8, 8, 8, 8, 16), layers_per_block=1
    )
    image = family == "hunyuanvideo-1.5-i2v"
    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=2 * latent_channels + 1,  # latents + condition latents + 1 mask channel (65 = 32 + 32 + 1)
        out_channels=latent_channels,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        text_embed_dim=TEXT_DIM,
        text_embed_2_dim=TEXT_DIM,
        image_embed_dim=SIGLIP_DIM,
        rope_axes_dim=(2, 2, 4),
        target_size=HUNYUAN_TARGET_SIZE,
        task_type="i2v" if image else "t2v",
    )
    parts: dict[str, Any] = {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "tokenizer_2": tokenizer_2,
        "text_encoder_2": text_encoder_2,
        "vae": vae,
        "transformer": transformer,
        # As hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v / _i2v: shift 5.0, CFG scale 6.0.
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=5.0),
        "guider": ClassifierFreeGuidance(guidance_scale=6.0),
    }
    if image:
        parts["image_encoder"] = SiglipVisionModel(
            SiglipVisionConfig(
                hidden_size=SIGLIP_DIM,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=32,
                patch_size=8,
            )
        )
        parts["feature_extractor"] = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    return parts


def _pipeline_class(family: str) -> Any:
    """The diffusers class ``family``'s folder is saved as (and loads back with)."""
    import diffusers

    return {
        "wan2.1-i2v": diffusers.WanImageToVideoPipeline,
        "wan2.2-i2v": diffusers.WanImageToVideoPipeline,
        "ltx-video": diffusers.LTXPipeline,
        "hunyuanvideo-1.5-t2v": diffusers.HunyuanVideo15Pipeline,
        "hunyuanvideo-1.5-i2v": diffusers.HunyuanVideo15ImageToVideoPipeline,
    }.get(family, diffusers.WanPipeline)


def build_tiny(family: str, folder: Path, *, seed: int = 0) -> Path:
    """Build a tiny random pipeline of ``family`` and save it to ``folder`` (from_pretrained-loadable); return it."""
    import torch

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r} (expected one of {', '.join(FAMILIES)})")
    torch.manual_seed(seed)
    if family == "ltx-video":
        parts = _ltx_parts()
    elif family.startswith("hunyuanvideo"):
        parts = _hunyuan_parts(family)
    else:
        parts = _wan_parts(family)
    pipe = _pipeline_class(family)(**parts)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(folder)
    return folder


def build_tiny_lora(family: str, folder: Path, *, seed: int = 1, rank: int = 4) -> Path:
    """Write one LoRA for the tiny transformer of ``family`` to ``folder``/tiny_lora.safetensors; return the file.

    The adapter targets the attention projections (to_q, to_k, to_v, to_out.0) with lora_alpha = rank (scale 1) and a
    non-zero, seeded lora_B, so loading it changes the video. It is saved by the pipeline class's
    ``save_lora_weights`` (keys ``transformer.<module>.lora_A/B.weight`` plus the LoraConfig as metadata).
    """
    import torch
    from peft import LoraConfig, get_peft_model_state_dict

    if family not in LORA_FAMILIES:
        raise ValueError(f"no LoRA loader for family {family!r} (expected one of {', '.join(LORA_FAMILIES)})")
    torch.manual_seed(seed)
    transformer = _ltx_parts()["transformer"] if family == "ltx-video" else _wan_transformer_for(family)
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    if getattr(transformer.config, "image_dim", None) is not None:
        # Wan 2.1 I2V: also the image key/value projections. Without them load_lora_weights pads the state dict with
        # zero add_k_proj/add_v_proj LoRAs that the saved LoraConfig does not list, and peft warns (RuntimeWarning).
        targets += ["add_k_proj", "add_v_proj"]
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets)
    transformer.add_adapter(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in transformer.named_parameters():
            if ".lora_B." in name:  # peft starts lora_B at zero: an adapter that changes nothing
                param.copy_(0.5 * torch.randn(param.shape, generator=generator))
    metadata = {k: sorted(v) if isinstance(v, set) else v for k, v in config.to_dict().items()}
    folder = Path(folder)
    _pipeline_class(family).save_lora_weights(
        folder,
        transformer_lora_layers=get_peft_model_state_dict(transformer),
        weight_name=LORA_WEIGHT_NAME,
        transformer_lora_adapter_metadata=metadata,
    )
    return folder / LORA_WEIGHT_NAME
