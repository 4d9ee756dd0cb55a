"""Encoder attention on PyTorch's fused scaled-dot-product attention (SDPA), with the position terms included.

The stock SAM attention materialises every (N,N) logit map and adds the decomposed relative-position terms
``rel_h[q, k_row] + rel_w[q, k_col]`` to it (4096 x 4096 per head in the global blocks at 1024 px). Here the
terms become extra feature columns instead, so that one fused kernel does all of it and no (N,N) map exists:

    q_aug = [q * scale, rel_h(q) (k_rows values), rel_w(q) (k_cols values)]
    k_aug = [k,         onehot(k_row),            onehot(k_col)]
    q_aug . k_aug = scale q.k + rel_h[q, k_row] + rel_w[q, k_col]

and ``scaled_dot_product_attention(q_aug, k_aug, v, scale=1)``. The augmented width is padded to a multiple of 8
with zeros. The value width stays the head width (the memory-efficient kernel accepts a narrower value);
``RelPosSdpaAttention.pad_values = True`` pads the values too, for kernels that need equal widths.
TinyViT's learned per-offset bias is small (windows of 7x7 / 14x14) and is passed as ``attn_mask``.

Injected key/value prompt tokens (:mod:`samdg.models.backbones.kv_prompt`) are appended to the keys and values;
their position columns are zero and an optional logit bias rides in one more column.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention as SamAttention
from segment_anything.modeling.image_encoder import get_rel_pos
from torch import nn

from samdg.models.backbones.kv_prompt import KVTokens


class PromptableAttention:
    """Mixin for encoder attention modules: the ``kv_prompt`` slot and its token expansion."""

    num_heads: int
    head_dim: int

    def _init_prompt_slot(self) -> None:
        self.kv_prompt: Optional[nn.Module] = None

    def _prompt_tokens(self, batch: int, dtype: torch.dtype, context: Optional[dict]) -> Optional[KVTokens]:
        """The injected tokens expanded to the attention batch: key/value (batch, heads, T, head_dim)."""
        if self.kv_prompt is None:
            return None
        tokens = self.kv_prompt({} if context is None else context)
        key, value = (_expand_to_batch(t, batch).to(dtype) for t in (tokens.key, tokens.value))
        if key.shape[1] != self.num_heads or key.shape[-1] != self.head_dim:
            raise ValueError(
                f"kv_prompt key has shape {tuple(key.shape)}; expected (batch, {self.num_heads}, T, {self.head_dim})"
            )
        bias = tokens.logit_bias
        if bias is not None:
            bias = bias.to(dtype).expand(self.num_heads, key.shape[2])
        return KVTokens(key, value, bias)


def _expand_to_batch(tokens: torch.Tensor, batch: int) -> torch.Tensor:
    """(h,T,d) -> (batch,h,T,d); (B,h,T,d) -> (batch,h,T,d) by repeating each image's tokens for its windows."""
    if tokens.ndim == 3:
        return tokens.unsqueeze(0).expand(batch, -1, -1, -1)
    if tokens.ndim == 4 and batch % tokens.shape[0] == 0:
        repeats = batch // tokens.shape[0]
        return tokens if repeats == 1 else tokens.repeat_interleave(repeats, dim=0)
    raise ValueError(f"kv_prompt tokens of shape {tuple(tokens.shape)} do not fit an attention batch of {batch}")


def _pad_last(tensor: torch.Tensor, width: int) -> torch.Tensor:
    extra = width - tensor.shape[-1]
    return tensor if extra == 0 else F.pad(tensor, (0, extra))


def _round_up(value: int, multiple: int = 8) -> int:
    return -(-value // multiple) * multiple


def augmented_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    rel_terms: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    extra: Optional[KVTokens] = None,
    pad_values: bool = False,
) -> torch.Tensor:
    """softmax(scale q k^T + rel_h + rel_w) v without an (N,N) tensor.

    q, k: (B,h,N,d); v: (B,h,N,dv); rel_terms: (rel_h (B,h,N,Kh), rel_w (B,h,N,Kw)) for keys on a Kh x Kw grid in
    row-major order (N = Kh*Kw); extra: prompt tokens already expanded to (B,h,T,d). Returns (B,h,N,dv).
    """
    batch, heads, tokens, _ = q.shape
    if rel_terms is None and (extra is None or extra.logit_bias is None):
        if extra is not None:
            k = torch.cat([k, extra.key], dim=2)
            v = torch.cat([v, extra.value], dim=2)
        return F.scaled_dot_product_attention(q, k, v, scale=scale)

    q_parts, k_parts = [q * scale], [k]
    extra_k_parts = [] if extra is None else [extra.key]
    if rel_terms is not None:
        rel_h, rel_w = rel_terms
        rows, cols = rel_h.shape[-1], rel_w.shape[-1]
        eye_rows = torch.eye(rows, dtype=q.dtype, device=q.device)
        eye_cols = torch.eye(cols, dtype=q.dtype, device=q.device)
        onehot = torch.cat([eye_rows.repeat_interleave(cols, dim=0), eye_cols.repeat(rows, 1)], dim=1)  # (N, Kh+Kw)
        q_parts += [rel_h.to(q.dtype), rel_w.to(q.dtype)]
        k_parts.append(onehot.expand(batch, heads, -1, -1))
        if extra is not None:
            extra_k_parts.append(q.new_zeros(batch, heads, extra.key.shape[2], rows + cols))
    if extra is not None and extra.logit_bias is not None:
        q_parts.append(q.new_ones(batch, heads, tokens, 1))
        k_parts.append(k.new_zeros(batch, heads, k.shape[2], 1))
        extra_k_parts.append(extra.logit_bias[None, :, :, None].expand(batch, -1, -1, 1))

    q_aug = torch.cat(q_parts, dim=-1)
    k_aug = torch.cat(k_parts, dim=-1)
    if extra is not None:
        k_aug = torch.cat([k_aug, torch.cat(extra_k_parts, dim=-1)], dim=2)
        v = torch.cat([v, extra.value], dim=2)
    width = _round_up(q_aug.shape[-1])
    q_aug, k_aug = _pad_last(q_aug, width), _pad_last(k_aug, width)
    value_width = v.shape[-1]
    if pad_values:
        v = _pad_last(v, width)
    out = F.scaled_dot_product_attention(q_aug, k_aug, v, scale=1.0)
    return out[..., :value_width] if pad_values else out


def _rel_pos_table(size: int, table: torch.Tensor) -> torch.Tensor:
    """(2*size-1, d) table -> (size, size, d) embeddings of the relative offsets q - k (as SAM's get_rel_pos)."""
    if table.shape[0] != 2 * size - 1:
        return get_rel_pos(size, size, table)  # resized on the fly, as the stock module does
    coords = torch.arange(size, device=table.device)
    return table[coords[:, None] - coords[None, :] + (size - 1)]


class RelPosSdpaAttention(PromptableAttention, SamAttention):
    """segment-anything's ViT attention (same parameters: qkv, proj, rel_pos_h, rel_pos_w) on fused SDPA.

    ``forward(x, context=None)``: (B',H,W,C) -> (B',H,W,C) for B' = B images x windows; ``context`` is the block's
    backbone context, handed to the ``kv_prompt`` slot. Numerically equivalent to the stock module (tested).
    """

    pad_values: bool = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.head_dim = self.qkv.in_features // self.num_heads
        self._init_prompt_slot()

    def forward(self, x: torch.Tensor, context: Optional[dict] = None) -> torch.Tensor:
        batch, rows, cols, _ = x.shape
        tokens = rows * cols
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, N, head_dim)
        rel_terms = None
        if self.use_rel_pos:
            table_h = _rel_pos_table(rows, self.rel_pos_h).to(q.dtype)
            table_w = _rel_pos_table(cols, self.rel_pos_w).to(q.dtype)
            grid_q = q.reshape(batch, self.num_heads, rows, cols, -1)
            rel_h = torch.einsum("bnhwc,hkc->bnhwk", grid_q, table_h).reshape(batch, self.num_heads, tokens, rows)
            rel_w = torch.einsum("bnhwc,wkc->bnhwk", grid_q, table_w).reshape(batch, self.num_heads, tokens, cols)
            rel_terms = (rel_h, rel_w)
        extra = self._prompt_tokens(batch, q.dtype, context)
        out = augmented_attention(q, k, v, self.scale, rel_terms, extra, pad_values=self.pad_values)
        out = out.transpose(1, 2).reshape(batch, rows, cols, -1)
        return self.proj(out)


class TinyViTAttention(PromptableAttention, nn.Module):
    """TinyViT's window attention (parameters norm, qkv, proj, attention_biases, as in MobileSAM/LiteMedSAM).

    ``forward(x, context=None)``: (B',N,C) -> (B',N,C) for windows of ``resolution`` tokens (B' = B images x
    windows); the learned bias per (|dy|,|dx|) offset is the mask. The bias is gathered on every call, so it always
    matches the current parameters. ``context`` goes to the ``kv_prompt`` slot.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: int = 1, resolution=(14, 14)) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.head_dim = key_dim
        self.scale = key_dim**-0.5
        self.value_dim = int(attn_ratio * key_dim)
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, num_heads * (2 * key_dim + self.value_dim))
        self.proj = nn.Linear(self.value_dim * num_heads, dim)
        rows, cols = resolution
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, rows * cols))
        # Offsets (|dy|, |dx|) numbered dy * cols + dx: the order in which TinyViT enumerates them.
        y, x = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        y, x = y.flatten(), x.flatten()
        index = (y[:, None] - y[None, :]).abs() * cols + (x[:, None] - x[None, :]).abs()
        self.register_buffer("attention_bias_idxs", index, persistent=False)
        self._init_prompt_slot()

    def forward(self, x: torch.Tensor, context: Optional[dict] = None) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(batch, tokens, self.num_heads, -1)
        q, k, v = (t.permute(0, 2, 1, 3) for t in qkv.split([self.key_dim, self.key_dim, self.value_dim], dim=3))
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)  # (heads, N, N)
        extra = self._prompt_tokens(batch, q.dtype, context)
        if extra is not None:
            k = torch.cat([k, extra.key], dim=2)
            v = torch.cat([v, extra.value], dim=2)
            extra_bias = extra.logit_bias
            if extra_bias is None:
                extra_bias = bias.new_zeros(self.num_heads, extra.key.shape[2])
            bias = torch.cat([bias, extra_bias[:, None, :].expand(-1, tokens, -1)], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0), scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, -1))
