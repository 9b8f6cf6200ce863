"""The reference formulation: the method computed the plain way, as the paper's code does.

Used as the oracle in the tests and as the baseline in the benchmark. Nothing here is optimised:

* both reference nets run at batch 2 (uncond and cond rows) through their whole forward pass and
  record *every* transformer's self-attention input;
* the main UNet's self-attention runs over the full concatenation Z = [X ; R] (queries for the
  reference tokens too) and keeps the first N rows;
* reference keys/values are projected again at every step;
* with ``d > 0`` the uncond row is computed even when ``guidance_scale <= 1`` throws it away.

Random draws follow the same order as :class:`~faceanon.pipeline.FaceAnonPipeline` (source VAE
sample, conditioning VAE sample, initial noise, scheduler noise), so outputs can be compared.
"""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

from faceanon.attention import multihead_attention, self_attention_sites


class _RecordAllProcessor:
    """Plain self-attention that records its input under the transformer's name."""

    def __init__(self, records: dict, name: str):
        self.records, self.name = records, name

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs
    ):
        self.records[self.name] = hidden_states
        return multihead_attention(
            attn, attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        )


class ConcatReferenceAttnProcessor:
    """Full self-attention over [X ; R]; the first N output tokens are kept."""

    def __init__(self):
        self.reference: torch.Tensor | None = None

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs
    ):
        tokens = hidden_states.shape[1]
        z = hidden_states if self.reference is None else torch.cat([hidden_states, self.reference], dim=1)
        out = multihead_attention(attn, attn.to_q(z), attn.to_k(z), attn.to_v(z))
        return out[:, :tokens]


def _record_all(net, records: dict) -> list:
    sites = self_attention_sites(net)
    for site in sites:
        site.module.set_processor(_RecordAllProcessor(records, site.name))
    return sites


@torch.no_grad()
def reference_call(
    pipe,
    source_image,
    conditioning_image,
    anonymization_degree: float = 0.0,
    guidance_scale: float = 4.0,
    num_inference_steps: int = 25,
    generator=None,
    latents: torch.Tensor | None = None,
    height: int = 512,
    width: int = 512,
    own_record: bool = False,
    output_type: str = "np",
):
    """Run ``pipe``'s components the reference way; returns images like ``pipe(...)``.

    ``own_record=True`` pairs each transformer with its *own* record instead of its block's first
    one: the plausible-looking mistake the tests must be able to tell apart.
    """
    pipe.check_inputs(
        source_image,
        conditioning_image,
        anonymization_degree,
        guidance_scale,
        num_inference_steps,
        height,
        width,
        generator,
        latents,
    )
    source, conditioning, degrees = pipe.prepare_inputs(
        source_image, conditioning_image, anonymization_degree
    )
    d = degrees[0]
    if any(x != d for x in degrees):
        raise ValueError("the reference formulation takes one anonymization_degree for the whole batch")
    batch, device, dtype = len(conditioning), pipe._execution_device, pipe.unet.dtype
    do_guidance, anonymize = guidance_scale > 1, d > 0
    two_rows = do_guidance or anonymize
    try:
        # Inputs: the anonymize mode reads the conditioning image in the source net too.
        cond_pixels = pipe._to_unit_pixels(conditioning, height, width)
        src_pixels = cond_pixels if anonymize else pipe._to_unit_pixels(source, height, width)
        e_cond = pipe.encode_image_embeddings(cond_pixels).to(dtype)
        e_src = (1 - d) * e_cond if anonymize else pipe.encode_image_embeddings(src_pixels).to(dtype)
        scaling = pipe.vae.config.scaling_factor
        l_src = scaling * pipe._vae_posterior(src_pixels).sample(generator)
        l_cond = scaling * pipe._vae_posterior(cond_pixels).sample(generator)
        if two_rows:
            src_latents, src_emb = (
                torch.cat([torch.zeros_like(l_src), l_src]),
                torch.cat([torch.zeros_like(e_src), e_src]),
            )
            cond_latents, cond_emb = torch.cat([l_cond] * 2), torch.cat([e_cond] * 2)
        else:
            src_latents, src_emb, cond_latents, cond_emb = l_src, e_src, l_cond, e_cond

        src_records, cond_records = {}, {}
        _record_all(pipe.referencenet, src_records)
        _record_all(pipe.conditioning_referencenet, cond_records)
        pipe.referencenet(src_latents.to(dtype), 0, encoder_hidden_states=src_emb, return_dict=False)
        pipe.conditioning_referencenet(
            cond_latents.to(dtype), 0, encoder_hidden_states=cond_emb, return_dict=False
        )
        if anonymize:  # nullify: cond half <- (1 - d) * cond half + d * uncond half
            for name, s in src_records.items():
                uncond, cond = s.chunk(2)
                src_records[name] = torch.cat([uncond, (1 - d) * cond + d * uncond])

        sites = self_attention_sites(pipe.unet)
        first_of_block = {}
        for site in sites:
            first_of_block.setdefault(site.block, site.name)
        for site in sites:
            processor = ConcatReferenceAttnProcessor()
            record = site.name if own_record else first_of_block[site.block]
            processor.reference = torch.cat([src_records[record], cond_records[record]], dim=1)
            site.module.set_processor(processor)
        embeddings = torch.cat([src_emb, cond_emb], dim=1)

        shape = (
            batch,
            pipe.unet.config.in_channels,
            height // pipe.vae_scale_factor,
            width // pipe.vae_scale_factor,
        )
        z = (
            latents
            if latents is not None
            else randn_tensor(shape, generator=generator, device=device, dtype=pipe.latents_dtype)
        )
        z = z.to(device=device, dtype=pipe.latents_dtype) * pipe.scheduler.init_noise_sigma
        pipe.scheduler.set_timesteps(num_inference_steps, device=device)
        step_kwargs = pipe._step_kwargs(generator)
        for t in pipe.scheduler.timesteps:
            model_input = pipe.scheduler.scale_model_input(torch.cat([z] * 2) if two_rows else z, t)
            v = pipe.unet(model_input.to(dtype), t, encoder_hidden_states=embeddings, return_dict=False)[
                0
            ].to(z.dtype)
            if two_rows:
                v_uncond, v_cond = v.chunk(2)
                v = (1 - guidance_scale) * v_uncond + guidance_scale * v_cond if do_guidance else v_cond
            z = pipe.scheduler.step(v, t, z, **step_kwargs, return_dict=False)[0]
        if output_type == "latent":
            return z
        image = pipe.decode_latents(z)
        return pipe.image_processor.postprocess(
            image.to(pipe.latents_dtype), output_type=output_type, do_denormalize=[True] * batch
        )
    finally:
        pipe._install_processors()  # back to the optimised processors
