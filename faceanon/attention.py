"""Reference attention: how the method is injected into stock diffusers UNets.

A reference net (the source net or the conditioning net) is run once per image at timestep 0. In
every UNet block, the input of the first transformer's self-attention (``norm1(h)``) is recorded.
The main UNet's self-attention then attends over its own tokens *and* that block's records:

    out = Attention(query=X, key=[X ; R], value=[X ; R]),   R = [S_src ; S_cond]

which is exactly the first N rows of the reference code's full self-attention over [X ; R] (rows of
attention are independent). Two savings follow and are exact: queries are computed for X only, and
the key/value projections of R do not depend on the timestep, so they are computed once per call.

Everything here is an attention *processor* (``Attention.set_processor``): the UNet classes stay
stock diffusers. Processors carry both a PyTorch SDPA and an xformers path, because
``enable_xformers_memory_efficient_attention()`` would otherwise replace them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

_BLOCK_RE = re.compile(r"^(down_blocks\.\d+|mid_block|up_blocks\.\d+)\.attentions\.(\d+)\.transformer_blocks\.(\d+)\.attn1$")


class ReferenceComplete(Exception):
    """Raised inside a reference net once its last needed record is taken: the rest of its
    forward pass (later transformers, the remaining up blocks, conv_out) would be thrown away."""


@dataclass(frozen=True)
class SelfAttentionSite:
    """One transformer's self-attention (``attn1``) inside a UNet, with its block and position."""

    name: str
    block: str  # "down_blocks.0", "mid_block", "up_blocks.1", ...
    is_block_first: bool  # the block's first transformer: the only record the method uses
    module: Attention


def _stage_order(block: str) -> tuple[int, int]:
    stage, _, index = block.partition(".")
    rank = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}[stage]
    return rank, int(index or 0)


def self_attention_sites(unet: torch.nn.Module) -> list[SelfAttentionSite]:
    """All ``attn1`` of a UNet in forward order (down blocks, mid block, up blocks)."""
    found = []
    for name, module in unet.named_modules():
        match = _BLOCK_RE.match(name)
        if match and isinstance(module, Attention):
            block, attention_index, transformer_index = match.group(1), int(match.group(2)), int(match.group(3))
            found.append((name, block, attention_index, transformer_index, module))
    found.sort(key=lambda f: (_stage_order(f[1]), f[2], f[3]))
    return [
        SelfAttentionSite(name, block, is_block_first=(a == 0 and t == 0), module=module)
        for name, block, a, t, module in found
    ]


def recorded_blocks(unet: torch.nn.Module) -> list[str]:
    """The blocks whose first record the method uses, in forward order."""
    return [s.block for s in self_attention_sites(unet) if s.is_block_first]


# ---------------------------------------------------------------------------------------------
# The attention kernel shared by all processors


def multihead_attention(attn: Attention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        backend: str = "sdpa") -> torch.Tensor:
    """Multi-head attention of already projected (B, tokens, inner) tensors, then the output
    projection. ``backend`` is "sdpa" (PyTorch) or "xformers"."""
    batch, _, inner = query.shape
    heads = attn.heads
    head_dim = inner // heads
    if attn.norm_q is not None or attn.norm_k is not None:
        raise NotImplementedError("q/k normalisation is not used by SD 2.1 UNets")
    if backend == "xformers":
        import xformers.ops

        def split(t):  # xformers takes (B, tokens, heads, head_dim)
            return t.reshape(batch, -1, heads, head_dim)

        out = xformers.ops.memory_efficient_attention(split(query), split(key), split(value), scale=attn.scale)
        out = out.reshape(batch, -1, inner)
    else:
        def split(t):  # SDPA takes (B, heads, tokens, head_dim)
            return t.reshape(batch, -1, heads, head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(query), split(key), split(value), scale=attn.scale)
        out = out.transpose(1, 2).reshape(batch, -1, inner)
    out = attn.to_out[1](attn.to_out[0](out.to(query.dtype)))
    return out / attn.rescale_output_factor


def _check_plain_self_attention(attn: Attention, hidden_states: torch.Tensor) -> None:
    # SD 2.1 transformers use none of these; refuse rather than silently compute something else.
    if hidden_states.ndim != 3 or attn.spatial_norm is not None or attn.group_norm is not None or attn.residual_connection:
        raise NotImplementedError("reference attention supports SD 2.1-style transformer self-attention only")


class SelfAttnProcessor:
    """Plain self-attention with a selectable backend; optionally records its input.

    Installed on a reference net's ``attn1``. When ``record_key`` is set, the input (``norm1(h)``)
    is stored in ``records[record_key]``; when ``stop_after`` is set, the rest of the reference
    net's forward pass is skipped by raising :class:`ReferenceComplete`.
    """

    def __init__(self, records: dict | None = None, record_key: str | None = None, stop_after: bool = False,
                 backend: str = "sdpa"):
        self.records = records
        self.record_key = record_key
        self.stop_after = stop_after
        self.backend = backend

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        _check_plain_self_attention(attn, hidden_states)
        if self.record_key is not None and self.records is not None:
            self.records[self.record_key] = hidden_states
            if self.stop_after:
                raise ReferenceComplete
        return multihead_attention(attn, attn.to_q(hidden_states), attn.to_k(hidden_states),
                                   attn.to_v(hidden_states), self.backend)


class ReferenceAttnProcessor:
    """The main UNet's self-attention with the reference records as extra keys and values.

    ``set_reference`` hands over the block's reference tokens R (rows, 2N, C); the first call
    projects them to keys and values (inside the UNet's forward, so that model offloading has put
    the weights on the right device) and every later denoising step reuses them. Without a
    reference it is ordinary self-attention.
    """

    def __init__(self, block: str, backend: str = "sdpa"):
        self.block = block
        self.backend = backend
        self.set_reference(None)

    def set_reference(self, reference: torch.Tensor | None) -> None:
        self.reference = reference
        self.reference_key: torch.Tensor | None = None
        self.reference_value: torch.Tensor | None = None

    def _reference_key_value(self, attn: Attention) -> tuple[torch.Tensor, torch.Tensor]:
        if self.reference_key is None:
            weight = attn.to_k.weight
            reference = self.reference.to(device=weight.device, dtype=weight.dtype)
            self.reference_key, self.reference_value = attn.to_k(reference), attn.to_v(reference)
        return self.reference_key, self.reference_value

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        _check_plain_self_attention(attn, hidden_states)
        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        if self.reference is not None:
            if self.reference.shape[0] != hidden_states.shape[0]:
                raise RuntimeError(
                    f"reference rows ({self.reference.shape[0]}) do not match the UNet batch ({hidden_states.shape[0]})"
                )
            reference_key, reference_value = self._reference_key_value(attn)
            key = torch.cat([key, reference_key], dim=1)
            value = torch.cat([value, reference_value], dim=1)
        return multihead_attention(attn, query, key, value, self.backend)


METHOD_PROCESSORS = (SelfAttnProcessor, ReferenceAttnProcessor)

# ---------------------------------------------------------------------------------------------
# Installing processors


def install_recording_processors(reference_net: torch.nn.Module, records: dict, backend: str = "sdpa") -> list[str]:
    """Make ``reference_net`` record the first transformer input of each block into ``records``
    and stop after the last one. Returns the recorded block names in forward order."""
    sites = self_attention_sites(reference_net)
    blocks = [s.block for s in sites if s.is_block_first]
    for site in sites:
        key = site.block if site.is_block_first else None
        site.module.set_processor(
            SelfAttnProcessor(records, key, stop_after=(key is not None and key == blocks[-1]), backend=backend)
        )
    return blocks


def install_reference_processors(unet: torch.nn.Module, backend: str = "sdpa") -> dict[str, list[ReferenceAttnProcessor]]:
    """Give every ``attn1`` of ``unet`` a :class:`ReferenceAttnProcessor`; returns them by block."""
    by_block: dict[str, list[ReferenceAttnProcessor]] = {}
    for site in self_attention_sites(unet):
        processor = ReferenceAttnProcessor(site.block, backend=backend)
        site.module.set_processor(processor)
        by_block.setdefault(site.block, []).append(processor)
    return by_block


def iter_reference_processors(unet: torch.nn.Module) -> Iterator[tuple[Attention, ReferenceAttnProcessor]]:
    for site in self_attention_sites(unet):
        if isinstance(site.module.processor, ReferenceAttnProcessor):
            yield site.module, site.module.processor


def set_references(unet: torch.nn.Module, references: dict[str, torch.Tensor] | None) -> None:
    """Give every transformer of each block that block's reference tokens (None clears them).

    All transformers of a block get the block's *first* record: the model was trained that way.
    """
    for _, processor in iter_reference_processors(unet):
        processor.set_reference(None if references is None else references[processor.block])


def run_reference_net(reference_net: torch.nn.Module, records: dict, latents: torch.Tensor,
                      embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run a reference net at timestep 0 and return its records (block -> (B, N, C))."""
    records.clear()
    try:
        reference_net(latents, 0, encoder_hidden_states=embeddings, return_dict=False)
    except ReferenceComplete:
        pass
    out = dict(records)
    records.clear()
    return out
