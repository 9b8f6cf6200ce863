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

_BLOCK_RE = re.compile(
    r"^(down_blocks\.\d+|mid_block|up_blocks\.\d+)\.attentions\.(\d+)\.transformer_blocks\.(\d+)\.attn1$"
)


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
            block, attention_index, transformer_index = (
                match.group(1),
                int(match.group(2)),
                int(match.group(3)),
            )
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


def multihead_attention(
    attn: Attention,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    backend: str = "sdpa",
    slice_size: int | str | None = None,
) -> torch.Tensor:
    """Multi-head attention of already projected (B, tokens, inner) tensors, then the output
    projection. ``backend`` is "sdpa" (PyTorch) or "xformers". ``slice_size`` (SDPA only) computes
    the attention ``slice_size`` heads at a time (``"auto"``: half the heads, ``"max"``: one), as
    diffusers' attention slicing does: each head is independent, so the result is the same."""
    batch, _, inner = query.shape
    heads = attn.heads
    head_dim = inner // heads
    if attn.norm_q is not None or attn.norm_k is not None:
        raise NotImplementedError("q/k normalisation is not used by SD 2.1 UNets")
    if backend == "xformers":
        import xformers.ops

        def split(t):  # xformers takes (B, tokens, heads, head_dim)
            return t.reshape(batch, -1, heads, head_dim)

        out = xformers.ops.memory_efficient_attention(
            split(query), split(key), split(value), scale=attn.scale
        )
        out = out.reshape(batch, -1, inner)
    else:

        def split(t):  # SDPA takes (B * heads, tokens, head_dim) here, so that heads can be sliced
            return t.reshape(batch, -1, heads, head_dim).transpose(1, 2).reshape(batch * heads, -1, head_dim)

        q, k, v = split(query), split(key), split(value)
        step = heads_per_slice(slice_size, heads) if slice_size is not None else batch * heads
        out = torch.cat(
            [
                F.scaled_dot_product_attention(
                    q[i : i + step], k[i : i + step], v[i : i + step], scale=attn.scale
                )
                for i in range(0, batch * heads, step)
            ]
        )
        out = out.reshape(batch, heads, -1, head_dim).transpose(1, 2).reshape(batch, -1, inner)
    out = attn.to_out[1](attn.to_out[0](out.to(query.dtype)))
    return out / attn.rescale_output_factor


def heads_per_slice(slice_size: int | str, heads: int) -> int:
    """diffusers' slice sizes: "auto" = half the heads, "max" = one head, an int = that many heads."""
    if slice_size == "auto":
        return max(1, heads // 2)
    if slice_size == "max":
        return 1
    if isinstance(slice_size, int) and not isinstance(slice_size, bool) and slice_size >= 1:
        return min(slice_size, heads)
    raise ValueError(f'slice_size must be "auto", "max" or a positive number of heads; got {slice_size!r}.')


def _check_plain_self_attention(
    attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states, attention_mask, kwargs: dict
) -> None:
    # SD 2.1 transformers use none of these; refuse rather than silently compute something else.
    if (
        hidden_states.ndim != 3
        or attn.spatial_norm is not None
        or attn.group_norm is not None
        or attn.residual_connection
    ):
        raise NotImplementedError("reference attention supports SD 2.1-style transformer self-attention only")
    given = [
        name
        for name, value in (
            ("encoder_hidden_states", encoder_hidden_states),
            ("attention_mask", attention_mask),
        )
        if value is not None
    ]
    given += [f"{name} (cross_attention_kwargs)" for name, value in kwargs.items() if value is not None]
    if given:
        raise NotImplementedError(
            f"The method's self-attention was given {', '.join(given)}, which it does not support: the "
            "face model attends over all of its tokens and the reference tokens, unmasked. Call the UNet "
            "without them (FaceAnonPipeline never passes them)."
        )


class SelfAttnProcessor:
    """Plain self-attention with a selectable backend; optionally records its input.

    Installed on a reference net's ``attn1``. When ``record_key`` is set, the input (``norm1(h)``)
    is stored in ``records[record_key]``; when ``stop_after`` is set, the rest of the reference
    net's forward pass is skipped by raising :class:`ReferenceComplete`.
    """

    def __init__(
        self,
        records: dict | None = None,
        record_key: str | None = None,
        stop_after: bool = False,
        backend: str = "sdpa",
        slice_size: int | str | None = None,
    ):
        self.records = records
        self.record_key = record_key
        self.stop_after = stop_after
        self.backend = backend
        self.slice_size = slice_size

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states=None,
        attention_mask=None,
        temb=None,
        **kwargs,
    ) -> torch.Tensor:
        _check_plain_self_attention(attn, hidden_states, encoder_hidden_states, attention_mask, kwargs)
        if self.record_key is not None and self.records is not None:
            self.records[self.record_key] = hidden_states
            if self.stop_after:
                raise ReferenceComplete
        return multihead_attention(
            attn,
            attn.to_q(hidden_states),
            attn.to_k(hidden_states),
            attn.to_v(hidden_states),
            self.backend,
            self.slice_size,
        )


@dataclass
class BlockReference:
    """One UNet block's reference tokens for a call, as distinct rows and, per UNet row, which one.

    ``source`` (S, N, C) and ``conditioning`` (K, N, C) hold each distinct record once (the null
    source ``s0`` once for all unconditional rows, the conditioning records once for both rows of an
    image); ``source_index`` / ``conditioning_index`` (rows,) pick the record of each UNet row.
    ``source_cache``, when given, keeps the source keys/values across calls (a
    :class:`~faceanon.pipeline.SourceReference` owns it): they depend only on the source image.
    """

    source: torch.Tensor
    source_index: torch.Tensor
    conditioning: torch.Tensor
    conditioning_index: torch.Tensor
    source_cache: dict | None = None
    cache_key: object = None

    @property
    def rows(self) -> int:
        return len(self.source_index)


class ReferenceAttnProcessor:
    """The main UNet's self-attention with the reference records as extra keys and values.

    Keys and values are ``[X ; S_src ; S_cond]`` per row, in this order (the reference code's). The
    records' key/value projections are computed on the first call after ``set_reference`` (inside the
    UNet's forward, so that model offloading has put the weights on the right device), once per
    distinct record, and every later denoising step reuses them. Without a reference it is
    ordinary self-attention.
    """

    def __init__(
        self, block: str, backend: str = "sdpa", name: str = "", slice_size: int | str | None = None
    ):
        self.block = block
        self.backend = backend
        self.name = name
        self.slice_size = slice_size
        self.set_reference(None)

    def set_reference(self, reference: BlockReference | None) -> None:
        self.reference = reference
        self._key_value: tuple[torch.Tensor, torch.Tensor] | None = None

    def _project(self, attn: Attention, records: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weight = attn.to_k.weight
        records = records.to(device=weight.device, dtype=weight.dtype)
        return attn.to_k(records), attn.to_v(records)

    def _source_key_value(self, attn: Attention) -> tuple[torch.Tensor, torch.Tensor]:
        reference = self.reference
        if reference.source_cache is None:
            return self._project(attn, reference.source)
        weight = attn.to_k.weight
        key = (self.name, reference.cache_key, weight.device, weight.dtype)
        if key not in reference.source_cache:
            reference.source_cache[key] = self._project(attn, reference.source)
        return reference.source_cache[key]

    def _reference_key_value(self, attn: Attention) -> tuple[torch.Tensor, torch.Tensor]:
        if self._key_value is None:
            reference = self.reference
            source_key, source_value = self._source_key_value(attn)
            conditioning_key, conditioning_value = self._project(attn, reference.conditioning)
            source_index = reference.source_index.to(source_key.device)
            conditioning_index = reference.conditioning_index.to(source_key.device)
            self._key_value = (
                torch.cat([source_key[source_index], conditioning_key[conditioning_index]], dim=1),
                torch.cat([source_value[source_index], conditioning_value[conditioning_index]], dim=1),
            )
        return self._key_value

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states=None,
        attention_mask=None,
        temb=None,
        **kwargs,
    ) -> torch.Tensor:
        _check_plain_self_attention(attn, hidden_states, encoder_hidden_states, attention_mask, kwargs)
        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        if self.reference is not None:
            if self.reference.rows != hidden_states.shape[0]:
                raise RuntimeError(
                    f"reference rows ({self.reference.rows}) do not match the UNet batch "
                    f"({hidden_states.shape[0]})"
                )
            reference_key, reference_value = self._reference_key_value(attn)
            key = torch.cat([key, reference_key], dim=1)
            value = torch.cat([value, reference_value], dim=1)
        return multihead_attention(attn, query, key, value, self.backend, self.slice_size)


METHOD_PROCESSORS = (SelfAttnProcessor, ReferenceAttnProcessor)

# ---------------------------------------------------------------------------------------------
# Installing processors


def install_recording_processors(
    reference_net: torch.nn.Module, records: dict, backend: str = "sdpa", slice_size: int | str | None = None
) -> list[str]:
    """Make ``reference_net`` record the first transformer input of each block into ``records``
    and stop after the last one. Returns the recorded block names in forward order."""
    sites = self_attention_sites(reference_net)
    blocks = [s.block for s in sites if s.is_block_first]
    for site in sites:
        key = site.block if site.is_block_first else None
        site.module.set_processor(
            SelfAttnProcessor(
                records,
                key,
                stop_after=(key is not None and key == blocks[-1]),
                backend=backend,
                slice_size=slice_size,
            )
        )
    return blocks


def install_reference_processors(
    unet: torch.nn.Module, backend: str = "sdpa", slice_size: int | str | None = None
) -> dict[str, list[ReferenceAttnProcessor]]:
    """Give every ``attn1`` of ``unet`` a :class:`ReferenceAttnProcessor`; returns them by block."""
    by_block: dict[str, list[ReferenceAttnProcessor]] = {}
    for site in self_attention_sites(unet):
        processor = ReferenceAttnProcessor(site.block, backend=backend, name=site.name, slice_size=slice_size)
        site.module.set_processor(processor)
        by_block.setdefault(site.block, []).append(processor)
    return by_block


def iter_reference_processors(unet: torch.nn.Module) -> Iterator[tuple[Attention, ReferenceAttnProcessor]]:
    for site in self_attention_sites(unet):
        if isinstance(site.module.processor, ReferenceAttnProcessor):
            yield site.module, site.module.processor


def set_references(unet: torch.nn.Module, references: dict[str, BlockReference] | None) -> None:
    """Give every transformer of each block that block's reference tokens (None clears them).

    All transformers of a block get the block's *first* record: the model was trained that way.
    """
    for _, processor in iter_reference_processors(unet):
        processor.set_reference(None if references is None else references[processor.block])


def run_reference_net(
    reference_net: torch.nn.Module, records: dict, latents: torch.Tensor, embeddings: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Run a reference net at timestep 0 and return its records (block -> (B, N, C))."""
    records.clear()
    try:
        reference_net(latents, 0, encoder_hidden_states=embeddings, return_dict=False)
    except ReferenceComplete:
        pass
    out = dict(records)
    records.clear()
    return out
