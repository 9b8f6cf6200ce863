"""The engine: FaceAnonPipeline against the plain reference formulation, on tiny random checkpoints
in the hub layout (the real 12 GB weights cannot be downloaded here; the loading code is the same)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from PIL import Image

from faceanon.attention import BlockReference, ReferenceAttnProcessor, self_attention_sites
from faceanon.pipeline import FaceAnonPipeline
from faceanon.reference import ConcatReferenceAttnProcessor, reference_call
from faceanon.testing import build_tiny_checkpoints

SIZE = 64  # pixels; 8x8 latents with the tiny VAE
STEPS = 3


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    paths = build_tiny_checkpoints(tmp_path_factory.mktemp("tiny"))
    pipe = FaceAnonPipeline.from_hub(**paths, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def faces():
    """Two real, different faces (public domain: NASA's astronaut, the US Navy's Grace Hopper)."""
    import matplotlib
    from skimage import data

    astronaut = Image.fromarray(data.astronaut()).crop((140, 40, 300, 200))
    hopper = (
        Image.open(f"{matplotlib.get_data_path()}/sample_data/grace_hopper.jpg")
        .convert("RGB")
        .crop((120, 60, 400, 340))
    )
    return astronaut, hopper


def run(pipe, source, conditioning, seed=0, **kwargs):
    kwargs = {"num_inference_steps": STEPS, "height": SIZE, "width": SIZE, "output_type": "np", **kwargs}
    generator = (
        [torch.Generator().manual_seed(s) for s in seed]
        if isinstance(seed, list)
        else torch.Generator().manual_seed(seed)
    )
    return pipe(source, conditioning, generator=generator, **kwargs).images


# --- exactness against the oracle ------------------------------------------------------------


def test_one_attention_layer_equals_full_concatenated_attention(pipe):
    site = self_attention_sites(pipe.unet)[0]
    attn, channels = site.module, site.module.to_q.in_features
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, channels, generator=generator)
    reference = torch.randn(2, 128, channels, generator=generator)

    fast = ReferenceAttnProcessor(site.block)
    rows = torch.arange(2)
    fast.set_reference(BlockReference(reference[:, :64], rows, reference[:, 64:], rows))
    oracle = ConcatReferenceAttnProcessor()
    oracle.reference = reference
    with torch.no_grad():
        difference = (fast(attn, x) - oracle(attn, x)).abs().max().item()
    assert difference <= 1e-5


CASES = [(1.25, 4.0), (0.0, 4.0), (1.25, 1.0), (0.0, 1.0), (0.6, 2.5)]
CASE_IDS = ["anonymize", "swap", "anonymize-no-guidance", "swap-no-guidance", "partial"]


def oracle(pipe, source, target, seed, **kwargs):
    kwargs = {"num_inference_steps": STEPS, "height": SIZE, "width": SIZE, **kwargs}
    return reference_call(pipe, source, target, generator=torch.Generator().manual_seed(seed), **kwargs)


@pytest.mark.parametrize("degree, guidance", CASES, ids=CASE_IDS)
def test_pipeline_equals_reference_formulation_float32(pipe, faces, degree, guidance):
    # One step: per UNet call the two formulations agree to float32 rounding (~1e-7); over several
    # steps a random tiny UNet amplifies rounding ~20x per step, which the float64 test covers.
    source, target = faces
    kwargs = dict(anonymization_degree=degree, guidance_scale=guidance, num_inference_steps=1)
    assert (
        np.abs(run(pipe, source, target, seed=3, **kwargs) - oracle(pipe, source, target, 3, **kwargs)).max()
        <= 1e-5
    )


@pytest.fixture(scope="module")
def pipe64(pipe, tmp_path_factory):
    paths = build_tiny_checkpoints(tmp_path_factory.mktemp("tiny"))
    pipe64 = FaceAnonPipeline.from_hub(**paths, local_files_only=True, torch_dtype=torch.float64)
    pipe64.set_progress_bar_config(disable=True)
    return pipe64


@pytest.mark.parametrize("degree, guidance", CASES[:2] + CASES[4:], ids=CASE_IDS[:2] + CASE_IDS[4:])
def test_pipeline_equals_reference_formulation_over_steps_float64(pipe64, faces, degree, guidance):
    # Several steps exercise the reference keys/values cached once and reused at every step.
    source, target = faces
    kwargs = dict(anonymization_degree=degree, guidance_scale=guidance)
    assert (
        np.abs(
            run(pipe64, source, target, seed=4, **kwargs) - oracle(pipe64, source, target, 4, **kwargs)
        ).max()
        <= 1e-9
    )


def test_every_transformer_of_a_block_uses_the_blocks_first_record(pipe, faces):
    blocks = [s.block for s in self_attention_sites(pipe.unet)]
    assert max(blocks.count(b) for b in set(blocks)) >= 3  # the tiny net has blocks worth testing

    source, target = faces
    kwargs = dict(anonymization_degree=0.0, guidance_scale=4.0, num_inference_steps=1)
    ours = run(pipe, source, target, seed=1, **kwargs)
    assert np.abs(ours - oracle(pipe, source, target, 1, **kwargs)).max() <= 1e-5
    assert np.abs(ours - oracle(pipe, source, target, 1, own_record=True, **kwargs)).max() > 1e-3


# --- randomness ----------------------------------------------------------------------------


def test_same_seed_same_output_and_global_rng_untouched(pipe, faces):
    image = faces[0]
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    first = run(pipe, None, image, seed=7, anonymization_degree=1.25)
    second = run(pipe, None, image, seed=7, anonymization_degree=1.25)
    other = run(pipe, None, image, seed=8, anonymization_degree=1.25)
    assert torch.equal(state, torch.get_rng_state())
    assert np.array_equal(first, second)
    assert np.abs(first - other).max() > 1e-3


def test_null_source_records_follow_weight_updates(pipe):
    before = {k: v.clone() for k, v in pipe._null_source_records(SIZE, SIZE).items()}
    state = {k: v.clone() for k, v in pipe.referencenet.state_dict().items()}
    try:
        with torch.no_grad():
            for parameter in pipe.referencenet.parameters():
                parameter.mul_(1.01)  # in place: same tensors, new values
        after = pipe._null_source_records(SIZE, SIZE)
        assert all(not torch.equal(before[k], after[k]) for k in before)
    finally:
        pipe.referencenet.load_state_dict(state)
    restored = pipe._null_source_records(SIZE, SIZE)
    assert all(torch.equal(before[k], restored[k]) for k in before)


def test_latents_are_honoured(pipe, faces):
    shape = (1, 4, SIZE // 8, SIZE // 8)
    latents_a = torch.randn(shape, generator=torch.Generator().manual_seed(10))
    latents_b = torch.randn(shape, generator=torch.Generator().manual_seed(11))
    a1 = run(pipe, None, faces[0], seed=0, anonymization_degree=1.25, latents=latents_a)
    a2 = run(pipe, None, faces[0], seed=0, anonymization_degree=1.25, latents=latents_a)
    b = run(pipe, None, faces[0], seed=0, anonymization_degree=1.25, latents=latents_b)
    assert np.array_equal(a1, a2)
    assert np.abs(a1 - b).max() > 1e-3


# --- properties of the math ------------------------------------------------------------------


def test_at_degree_one_guidance_does_not_matter(pipe, faces):
    outputs = [
        run(pipe, None, faces[1], seed=5, anonymization_degree=1.0, guidance_scale=g) for g in (1.0, 4.0, 9.0)
    ]
    assert np.abs(outputs[0] - outputs[1]).max() <= 1e-5
    assert np.abs(outputs[0] - outputs[2]).max() <= 1e-5


def test_swap_and_anonymize_in_one_batch_equal_each_alone(pipe, faces):
    astronaut, hopper = faces
    batch = run(
        pipe, [hopper, astronaut], [astronaut, astronaut], seed=[21, 22], anonymization_degree=[0.0, 1.25]
    )
    swap_alone = run(pipe, hopper, astronaut, seed=21, anonymization_degree=0.0)
    anonymize_alone = run(pipe, astronaut, astronaut, seed=22, anonymization_degree=1.25)
    assert np.abs(batch[0] - swap_alone[0]).max() <= 1e-5
    assert np.abs(batch[1] - anonymize_alone[0]).max() <= 1e-5


def test_convenience_methods_and_callback(pipe, faces):
    steps = []
    image = pipe.anonymize(
        faces[0],
        degree=1.25,
        seed=0,
        num_inference_steps=2,
        height=SIZE,
        width=SIZE,
        callback_on_step_end=lambda p, i, t, kw: steps.append(i) or kw,
    )
    assert isinstance(image, Image.Image) and image.size == (SIZE, SIZE)
    assert steps == [0, 1]
    swapped = pipe.swap(
        faces[1], [faces[0], faces[0]], seed=[1, 2], num_inference_steps=2, height=SIZE, width=SIZE
    )
    assert len(swapped) == 2 and all(isinstance(s, Image.Image) for s in swapped)


def test_inputs_as_arrays_and_tensors_match_pil(pipe, faces):
    pil = faces[0].resize((SIZE, SIZE))
    array = np.asarray(pil)
    tensor = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    from_pil = run(pipe, None, pil, anonymization_degree=1.25)
    assert np.array_equal(from_pil, run(pipe, None, array, anonymization_degree=1.25))
    assert np.abs(from_pil - run(pipe, None, tensor, anonymization_degree=1.25)).max() <= 1e-5


def test_scheduler_is_swappable_the_diffusers_way(pipe, faces):
    original = pipe.scheduler
    try:
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        ddim = run(pipe, None, faces[0], anonymization_degree=1.25)
        for name in ("ddim", "dpmsolver++", "unipc", "ddpm"):
            pipe.set_scheduler(name)
            assert np.isfinite(run(pipe, None, faces[0], anonymization_degree=1.25)).all()
        assert np.isfinite(ddim).all()
        with pytest.raises(ValueError, match="Unknown scheduler"):
            pipe.set_scheduler("euler-of-the-future")
    finally:
        pipe.scheduler = original


def fake_xformers(calls: list):
    """xformers exists for CUDA only; this stand-in computes memory_efficient_attention with SDPA
    so that the routing through the xformers path can be checked on a CPU."""
    import types

    import torch.nn.functional as F

    def memory_efficient_attention(query, key, value, attn_bias=None, p=0.0, scale=None, op=None):
        calls.append(tuple(query.shape))
        squeeze = query.ndim == 3  # diffusers' stock processor passes (B*heads, tokens, head_dim)
        q, k, v = (t.unsqueeze(2) if squeeze else t for t in (query, key, value))
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=attn_bias, scale=scale
        ).transpose(1, 2)
        return out.squeeze(2) if squeeze else out

    module = types.ModuleType("xformers")
    module.ops = types.ModuleType("xformers.ops")
    module.ops.memory_efficient_attention = memory_efficient_attention
    return module


def test_enabling_xformers_keeps_the_methods_processors(pipe, faces, monkeypatch):
    from faceanon.attention import ReferenceAttnProcessor

    calls = []
    module = fake_xformers(calls)
    monkeypatch.setitem(sys.modules, "xformers", module)
    monkeypatch.setitem(sys.modules, "xformers.ops", module.ops)
    # diffusers binds xformers at import time when it is installed (it never is on a CPU machine).
    monkeypatch.setattr("diffusers.models.attention_processor.xformers", module, raising=False)
    before = run(pipe, None, faces[0], anonymization_degree=1.25, num_inference_steps=1)
    pipe.enable_xformers_memory_efficient_attention()
    try:
        processors = [s.module.processor for s in self_attention_sites(pipe.unet)]
        assert all(isinstance(p, ReferenceAttnProcessor) and p.backend == "xformers" for p in processors)
        after = run(pipe, None, faces[0], anonymization_degree=1.25, num_inference_steps=1)
    finally:
        pipe.disable_xformers_memory_efficient_attention()
    assert calls, "no attention went through xformers"
    assert np.abs(before - after).max() <= 1e-5


# --- bad inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(conditioning_image="face.png"), TypeError, "PIL image"),
        (dict(height=60), ValueError, "multiple of 8"),
        (dict(anonymization_degree=-0.5), ValueError, ">= 0"),
        (dict(source_image="twins", conditioning_image="x"), TypeError, "PIL image"),
        (dict(num_inference_steps=0), ValueError, "positive integer"),
        (dict(anonymization_degree=0.0, source_image=None), ValueError, "is required for face swapping"),
        (dict(anonymization_degree=[1.0, 1.0, 1.0]), ValueError, "one per image"),
    ],
)
def test_bad_inputs_get_messages_people_understand(pipe, faces, kwargs, error, message):
    call = dict(
        source_image=faces[0],
        conditioning_image=faces[1],
        anonymization_degree=1.25,
        num_inference_steps=1,
        height=SIZE,
        width=SIZE,
    )
    call.update(kwargs)
    with pytest.raises(error, match=message):
        pipe(**call)


def test_mismatched_batches_and_generators(pipe, faces):
    with pytest.raises(ValueError, match="one source image per conditioning image"):
        pipe(
            [faces[0]] * 2,
            [faces[1]] * 3,
            anonymization_degree=0.0,
            num_inference_steps=1,
            height=SIZE,
            width=SIZE,
        )
    with pytest.raises(ValueError, match="one per image"):
        pipe(
            None,
            [faces[1]] * 2,
            anonymization_degree=1.0,
            num_inference_steps=1,
            height=SIZE,
            width=SIZE,
            generator=[torch.Generator()],
        )


def test_per_step_work_does_not_walk_the_models(pipe, faces, monkeypatch):
    """diffusers' `_execution_device` and `ModelMixin.dtype` walk every module (~14 ms and ~1.4 ms
    at SD 2.1 size): a call looks them up a fixed number of times, whatever the number of steps."""
    from diffusers import ModelMixin

    counts = {"device": 0, "dtype": 0}

    def counting(name, original):
        def getter(self):
            counts[name] += 1
            return original.fget(self)

        return property(getter)

    monkeypatch.setattr(
        FaceAnonPipeline, "_execution_device", counting("device", FaceAnonPipeline._execution_device)
    )
    monkeypatch.setattr(ModelMixin, "dtype", counting("dtype", ModelMixin.dtype))
    lookups = []
    for steps in (1, 2, 6):  # the first call also fills the s0 cache
        counts.update(device=0, dtype=0)
        pipe(
            None,
            faces[0],
            anonymization_degree=1.25,
            num_inference_steps=steps,
            height=64,
            width=64,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        )
        lookups.append(dict(counts))
    assert lookups[1] == lookups[2], lookups
    assert lookups[1]["device"] == 1


# --- nothing silently wrong: the method's processors ------------------------------------------


def test_replaced_processors_are_refused_until_restored(pipe, faces):
    from diffusers.models.attention_processor import AttnProcessor2_0

    from faceanon.errors import MethodProcessorsMissingError

    before = run(pipe, None, faces[0], anonymization_degree=1.25, num_inference_steps=1)
    try:
        pipe.unet.set_attention_slice("auto")  # diffusers' own slicing: replaces every processor
        with pytest.raises(MethodProcessorsMissingError, match="restore_attention_processors"):
            run(pipe, None, faces[0], anonymization_degree=1.25, num_inference_steps=1)
        pipe.restore_attention_processors()
        pipe.referencenet.set_attn_processor(AttnProcessor2_0())
        with pytest.raises(MethodProcessorsMissingError, match="pipe.referencenet"):
            run(pipe, None, faces[0], anonymization_degree=1.25, num_inference_steps=1)
    finally:
        pipe.restore_attention_processors()
    assert np.array_equal(before, run(pipe, None, faces[0], anonymization_degree=1.25, num_inference_steps=1))


@pytest.mark.parametrize("slice_size", ["auto", "max", 1])
def test_attention_slicing_runs_inside_the_methods_processors(pipe, faces, slice_size):
    from diffusers.models.attention_processor import Attention, SlicedAttnProcessor

    from faceanon.attention import METHOD_PROCESSORS

    plain = run(pipe, faces[1], faces[0], anonymization_degree=0.0, num_inference_steps=1)
    pipe.enable_attention_slicing(slice_size)
    try:
        sites = [s for net in (pipe.unet, pipe.referencenet) for s in self_attention_sites(net)]
        assert all(s.module.processor.slice_size == slice_size for s in sites)
        others = [
            m.processor
            for m in pipe.unet.modules()
            if isinstance(m, Attention) and not isinstance(m.processor, METHOD_PROCESSORS)
        ]
        assert others and all(isinstance(p, SlicedAttnProcessor) for p in others)
        sliced = run(pipe, faces[1], faces[0], anonymization_degree=0.0, num_inference_steps=1)
    finally:
        pipe.disable_attention_slicing()
    # Heads are independent, so slicing is exact in arithmetic; in float32 the kernels for another
    # number of heads (and diffusers' sliced processor, baddbmm) round differently: ~1e-7 per call.
    assert np.abs(plain - sliced).max() <= 1e-5
    with pytest.raises(ValueError, match="slice_size"):
        pipe.enable_attention_slicing("half")


def test_masks_and_encoder_states_given_to_the_methods_attention_are_refused(pipe):
    site = self_attention_sites(pipe.unet)[0]
    x = torch.randn(1, 16, site.module.to_q.in_features)
    for kwargs, name in (
        (dict(attention_mask=torch.ones(1, 16, 16)), "attention_mask"),
        (dict(encoder_hidden_states=x), "encoder_hidden_states"),
    ):
        for processor in (site.module.processor, self_attention_sites(pipe.referencenet)[0].module.processor):
            with pytest.raises(NotImplementedError, match=name):
                processor(site.module, x, **kwargs)


# --- diffusers conventions ------------------------------------------------------------------------


def test_interrupt_properties_and_callback_tensor_inputs(pipe, faces):
    seen = []

    def stop_after_first(p, i, t, kwargs):
        seen.append((i, sorted(kwargs), p.guidance_scale, p.num_timesteps, p.do_classifier_free_guidance))
        p._interrupt = True
        return kwargs

    run(
        pipe,
        None,
        faces[0],
        anonymization_degree=1.25,
        num_inference_steps=4,
        guidance_scale=3.0,
        callback_on_step_end=stop_after_first,
        callback_on_step_end_tensor_inputs=["latents"],
    )
    assert seen == [(0, ["latents"], 3.0, 4, True)]  # steps 1-3 skipped
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        run(
            pipe,
            None,
            faces[0],
            anonymization_degree=1.25,
            callback_on_step_end=stop_after_first,
            callback_on_step_end_tensor_inputs=["prompt_embeds"],
        )


@pytest.mark.slow
def test_the_example_docstring_runs(tmp_path, monkeypatch):
    """Runs the example of `FaceAnonPipeline.__call__` as written, at 512x512 and 25 steps, on tiny
    checkpoints (the real weights cannot exist here; FACEANON_* point from_hub at the tiny ones)
    whose VAE downsamples 64x, so that 512x512 pixels are 8x8 latents: seconds, not minutes."""
    import doctest

    from faceanon.pipeline import EXAMPLE_DOC_STRING
    from faceanon.testing import tiny_pipeline_env

    assert (
        "pipe.encode_source(" in FaceAnonPipeline.__call__.__doc__
    )  # replace_example_docstring put it there
    for name, value in tiny_pipeline_env(tmp_path, vae_blocks=7).items():
        monkeypatch.setenv(name, value)
    test = doctest.DocTestParser().get_doctest(EXAMPLE_DOC_STRING, {}, "EXAMPLE_DOC_STRING", None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
    assert len(test.examples) >= 8


def test_set_scheduler_switches_and_a_per_call_choice_does_not_persist(pipe, faces, grace_hopper_rgb):
    from diffusers import DDPMScheduler

    from faceanon.anonymizer import FaceAnonymizer

    original = pipe.scheduler
    assert isinstance(original, DDPMScheduler)
    ddpm = run(pipe, None, faces[0], anonymization_degree=1.25)
    try:
        pipe.set_scheduler("ddim")
        assert isinstance(pipe.scheduler, DDIMScheduler)
        assert pipe.scheduler.config.prediction_type == "v_prediction"
        assert np.abs(run(pipe, None, faces[0], anonymization_degree=1.25) - ddpm).max() > 1e-3
    finally:
        pipe.scheduler = original

    anonymizer = FaceAnonymizer(pipeline=pipe)
    used = []
    spy = lambda p, i, t, kwargs: used.append(type(p.scheduler).__name__) or kwargs  # noqa: E731
    kwargs = dict(seed=0, steps=2, degree=1.25)
    with_ddim = anonymizer.anonymize(grace_hopper_rgb, scheduler="ddim", progress=None, **kwargs)
    assert pipe.scheduler is original
    run(pipe, None, faces[0], anonymization_degree=1.25, num_inference_steps=1, callback_on_step_end=spy)
    assert used == ["DDPMScheduler"]
    default = anonymizer.anonymize(grace_hopper_rgb, progress=None, **kwargs)
    assert np.abs(np.asarray(with_ddim.image, float) - np.asarray(default.image, float)).max() > 0


# --- one source for many frames (video tracks) ----------------------------------------------------


def test_an_encoded_source_gives_the_plain_calls_outputs(pipe, faces):
    """Swap mode on the frames of a track: one generated face as source, the same seed for every
    frame. encode_source + source_reference must give what plain per-frame calls give."""
    source, frame = faces[1], faces[0]
    frames = [frame, frame.rotate(8), frame.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    kwargs = dict(anonymization_degree=0.0, num_inference_steps=2, height=SIZE, width=SIZE, output_type="np")
    plain = [pipe(source, f, generator=torch.Generator().manual_seed(5), **kwargs).images[0] for f in frames]
    reference = pipe.encode_source(
        source, generator=torch.Generator().manual_seed(5), height=SIZE, width=SIZE
    )
    one_by_one = [
        pipe(
            None, f, source_reference=reference, generator=torch.Generator().manual_seed(5), **kwargs
        ).images[0]
        for f in frames
    ]
    cached_layers = len(reference.key_values)
    assert cached_layers == len(self_attention_sites(pipe.unet))  # filled once, then reused
    batched = pipe(
        None,
        frames,
        source_reference=reference,
        generator=[torch.Generator().manual_seed(5) for _ in frames],
        **kwargs,
    ).images
    assert len(reference.key_values) == cached_layers
    # Same shapes, same kernels: bit for bit. A batch of 3 runs CLIP, the VAE and the UNets at
    # another batch size, whose kernels may round differently (float32 rounding only).
    assert all(np.array_equal(a, b) for a, b in zip(plain, one_by_one, strict=True))
    assert max(np.abs(a - b).max() for a, b in zip(plain, batched, strict=True)) <= 1e-5
    # the reference really is the source's: another source gives other faces
    other = pipe.encode_source(frame, generator=torch.Generator().manual_seed(5), height=SIZE, width=SIZE)
    assert (
        np.abs(
            pipe(
                None, frame, source_reference=other, generator=torch.Generator().manual_seed(5), **kwargs
            ).images[0]
            - one_by_one[0]
        ).max()
        > 1e-3
    )


def test_an_encoded_source_without_guidance_and_its_misuses(pipe, faces):
    source, frame = faces
    kwargs = dict(
        anonymization_degree=0.0,
        guidance_scale=1.0,
        num_inference_steps=2,
        height=SIZE,
        width=SIZE,
        output_type="np",
    )
    reference = pipe.encode_source(
        source, generator=torch.Generator().manual_seed(2), height=SIZE, width=SIZE
    )
    plain = pipe(source, frame, generator=torch.Generator().manual_seed(2), **kwargs).images
    cached = pipe(
        None, frame, source_reference=reference, generator=torch.Generator().manual_seed(2), **kwargs
    ).images
    assert np.array_equal(plain, cached)

    call = dict(kwargs, source_reference=reference)
    with pytest.raises(ValueError, match="not both"):
        pipe(source, frame, **call)
    with pytest.raises(ValueError, match="face swapping"):
        pipe(None, frame, **dict(call, anonymization_degree=1.25))
    with pytest.raises(ValueError, match="encoded at 64x64"):
        pipe(None, frame, **dict(call, height=32, width=32))
    with pytest.raises(ValueError, match="one source image"):
        pipe.encode_source([source, frame])
    with torch.no_grad():
        pipe.referencenet.conv_in.weight.mul_(1.0)  # an in-place update: the reference is stale
    with pytest.raises(ValueError, match="encode the source again"):
        pipe(None, frame, **call)
