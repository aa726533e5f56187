"""HunyuanVideo 1.5's joint attention without its padding mask: the same result on the fast attention kernels.

diffusers' processor attends over the video tokens and the text and image tokens together, with a boolean mask of
(tokens x tokens) that hides the padding of the text and image slots. A masked call falls off PyTorch's flash and
cuDNN kernels (onto the memory-efficient one, and the mask is built anew in every block). But the transformer puts
the valid text and image tokens first and the padding last, so for one video at a time the padded tail can simply
be cut off: every valid token attends to exactly the tokens it did, no mask is needed, and the rows of the padding
(which nothing valid ever reads) get zeros. One host read of the mask per pass finds where the padding starts.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_hunyuan_video15 import HunyuanVideo15AttnProcessor2_0


class UnpaddedAttnProcessor(HunyuanVideo15AttnProcessor2_0):  # type: ignore[misc]  # diffusers is read as Any
    """diffusers' HunyuanVideo 1.5 processor (0.42), attending over the valid tokens only when the batch is one."""

    def __init__(self) -> None:
        super().__init__()
        self._mask: torch.Tensor | None = None  # the last mask seen (the same tensor for every block of a pass)
        self._valid = 0

    def _valid_tokens(self, mask: torch.Tensor) -> int | None:
        """How many encoder tokens are valid, or None when they are not all before the padding."""
        if mask is not self._mask:
            valid = int(mask.sum())
            self._valid = valid if bool(mask[0, :valid].all()) else -1
            self._mask = mask
        return self._valid if self._valid >= 0 else None

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: torch.Tensor | None = None,
    ) -> Any:  # (video, encoder) hidden states; diffusers annotates its own as one tensor
        """Attention over the video and valid encoder tokens; padded encoder rows come out as zeros."""
        valid = None
        if encoder_hidden_states is not None and attention_mask is not None and hidden_states.shape[0] == 1:
            valid = self._valid_tokens(attention_mask)
        if valid is None:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        assert encoder_hidden_states is not None
        # 1-4 as diffusers does them: projections, QK norms, rotary embeddings of the video stream, encoder QKV.
        query = attn.norm_q(attn.to_q(hidden_states).unflatten(2, (attn.heads, -1)))
        key = attn.norm_k(attn.to_k(hidden_states).unflatten(2, (attn.heads, -1)))
        value = attn.to_v(hidden_states).unflatten(2, (attn.heads, -1))
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        encoder_query = attn.add_q_proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
        encoder_key = attn.add_k_proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
        encoder_value = attn.add_v_proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
        if attn.norm_added_q is not None:
            encoder_query = attn.norm_added_q(encoder_query)
        if attn.norm_added_k is not None:
            encoder_key = attn.norm_added_k(encoder_key)
        query = torch.cat([query, encoder_query], dim=1)
        key = torch.cat([key, encoder_key], dim=1)
        value = torch.cat([value, encoder_value], dim=1)
        # 5. Attention over the kept tokens, with no mask: the video tokens and the valid encoder tokens.
        seq_len = query.shape[1]
        keep = seq_len - encoder_hidden_states.shape[1] + valid
        out = dispatch_attention_fn(
            query[:, :keep],
            key[:, :keep],
            value[:, :keep],
            attn_mask=None,
            dropout_p=0.0,
            is_causal=False,
            backend=self._attention_backend,
            parallel_config=self._parallel_config,
        )
        if keep < seq_len:
            out = F.pad(out, (0, 0, 0, 0, 0, seq_len - keep))
        out = out.flatten(2, 3).to(query.dtype)
        # 6. Output projections, as diffusers does them.
        split = out.shape[1] - encoder_hidden_states.shape[1]
        hidden_states, encoder_hidden_states = out[:, :split], out[:, split:]
        if getattr(attn, "to_out", None) is not None:
            hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if getattr(attn, "to_add_out", None) is not None:
            encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        return hidden_states, encoder_hidden_states


def unpad_attention(transformer: Any) -> int:
    """Give every block of a HunyuanVideo 1.5 transformer the unpadded processor; answer how many were changed."""
    shared = UnpaddedAttnProcessor()  # one instance: the mask is read once per pass, not once per block
    changed = 0
    for module in transformer.modules():
        processor = getattr(module, "processor", None)
        if type(processor) is HunyuanVideo15AttnProcessor2_0:
            shared._attention_backend = processor._attention_backend  # type: ignore[union-attr]
            module.set_processor(shared)
            changed += 1
    return changed
