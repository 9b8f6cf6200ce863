"""FaceAnonPipeline: "Face Anonymization Made Simple" (Kung et al., WACV 2025) on stock diffusers.

One call computes exactly what the published method computes (DESIGN.md sections 2-3), with the
exactness-preserving savings of section 4:

* reference nets run once per call at timestep 0 and stop after their last used record;
* the conditioning records are computed once (batch B), not once per row;
* the null-source records ``s0`` (zero latents, zero embedding) are computed once per loaded model;
* the UNet computes queries for its own tokens only, and the reference keys/values once per call;
* no unconditional row when guidance would throw it away (``guidance_scale <= 1``).

All randomness (the VAE posterior samples, the initial noise, the scheduler's noise) comes from the
caller's generator(s), in that order, so a list of generators gives each item exactly the result
it gets when run alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput, replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPImageProcessorPil, CLIPVisionModel

from faceanon.attention import (
    METHOD_PROCESSORS,
    BlockReference,
    heads_per_slice,
    install_recording_processors,
    install_reference_processors,
    run_reference_net,
    self_attention_sites,
    set_references,
)
from faceanon.configs import CLIP_PREPROCESSOR_CONFIG
from faceanon.errors import MethodProcessorsMissingError
from faceanon.schedulers import make_scheduler

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from PIL import Image
        >>> from skimage import data

        >>> from faceanon.pipeline import FaceAnonPipeline

        >>> # The weights card's weights (`faceanon download` fetches them).
        >>> pipe = FaceAnonPipeline.from_hub()
        >>> face = Image.fromarray(data.astronaut()).crop((140, 40, 300, 200))  # an aligned face crop
        >>> double = Image.fromarray(data.astronaut()).crop((150, 50, 290, 190))  # another one

        >>> # Anonymize: a new identity with the pose, expression and background of `face`.
        >>> new_face = pipe(None, face, anonymization_degree=1.25,
        ...                 generator=torch.Generator().manual_seed(0)).images[0]
        >>> new_face.size
        (512, 512)

        >>> # Swap: the identity of `new_face` onto `face` and `double`; the source is encoded once.
        >>> source = pipe.encode_source(new_face, generator=torch.Generator().manual_seed(1))
        >>> frames = pipe(None, [face, double], anonymization_degree=0.0, source_reference=source,
        ...               generator=[torch.Generator().manual_seed(1) for _ in range(2)]).images
        >>> len(frames)
        2

        ```
"""

ImageInput = PIL.Image.Image | np.ndarray | torch.Tensor | list
# GPU memory one more face takes in a call, 512x512, fp32 (half in fp16/bf16). Measured on an H200
# (`python -m benchmarks.speed --options batch`, 1-8 faces, least squares): 1,077 MiB in fp32 with
# PyTorch's default TF32 convolutions, 539 MiB in fp16; rounded up.
ACTIVATION_BYTES_PER_FACE_512_FP32 = 1.1 * 2**30
_METHOD_NETS = ("unet", "referencenet", "conditioning_referencenet")


@dataclass
class _Posterior:
    mean: torch.Tensor
    std: torch.Tensor


@dataclass(eq=False)
class SourceReference:
    """A source (identity) image encoded once by :meth:`FaceAnonPipeline.encode_source`, for
    swapping it onto many faces (the frames of a video track).

    ``records``: the source net's records, block -> (1, N, C); ``embedding``: e(S), (1, 1, D);
    ``latents``: l(S), (1, 4, H/8, W/8); ``key_values``: filled by the first call, the records'
    keys/values in every UNet layer. Valid for the pipeline, weights and size it was encoded with.
    """

    records: dict[str, torch.Tensor]
    embedding: torch.Tensor
    latents: torch.Tensor
    height: int
    width: int
    weights_stamp: int
    key_values: dict = field(default_factory=dict, repr=False)


@dataclass
class FaceAnonPipelineOutput(BaseOutput):
    """``images``: list of PIL images, a numpy array (B, H, W, 3) or a tensor (B, 3, H, W) in [0, 1]."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor


class FaceAnonPipeline(DiffusionPipeline):
    r"""Anonymize (``anonymization_degree > 0``) or swap (``= 0``) aligned 512x512 face crops.

    Components: ``unet``, ``referencenet`` (reads the source/identity image),
    ``conditioning_referencenet`` (reads the driving image: pose, expression, background) — three
    stock :class:`~diffusers.UNet2DConditionModel` of SD 2.1 size — the SD 2.1 ``vae``, a CLIP
    ViT-L/14 ``image_encoder`` (:class:`~transformers.CLIPVisionModel`), its ``feature_extractor``
    and a ``scheduler`` (DDPM with SD 2.1's v-prediction config by default).
    """

    model_cpu_offload_seq = "image_encoder->referencenet->conditioning_referencenet->unet->vae"
    _optional_components = []
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        unet: UNet2DConditionModel,
        referencenet: UNet2DConditionModel,
        conditioning_referencenet: UNet2DConditionModel,
        vae: AutoencoderKL,
        image_encoder: CLIPVisionModel,
        feature_extractor: CLIPImageProcessorPil,
        scheduler,
    ):
        super().__init__()
        self.register_modules(
            unet=unet,
            referencenet=referencenet,
            conditioning_referencenet=conditioning_referencenet,
            vae=vae,
            image_encoder=image_encoder,
            feature_extractor=feature_extractor,
            scheduler=scheduler,
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        # do_normalize=False: we need the [0, 1] copy for CLIP; the VAE copy is 2x - 1 of it.
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor, do_normalize=False)
        self.attention_backend = "sdpa"
        self.attention_slice_size: str | int | None = None
        self._install_processors()
        self._null_records_cache: dict = {}

    # ------------------------------------------------------------------------------------------
    # Construction helpers

    @classmethod
    def from_hub(
        cls,
        face_model: str | None = None,
        vae: str | None = None,
        image_encoder: str | None = None,
        torch_dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        local_files_only: bool | None = None,
        scheduler: str = "ddpm",
        verify: bool = True,
    ):
        """Load the real weights from the hub (or local folders) as the weights card pins them.

        Each source is a hub repo id (optionally ``repo@revision``) or a local folder; ``None``
        takes the environment variable (``FACEANON_FACE_MODEL``, ``FACEANON_VAE``,
        ``FACEANON_IMAGE_ENCODER``) or the weights card default. Raises
        :class:`faceanon.errors.WeightsNotFoundError` with a way out when weights are missing.
        """
        from faceanon.weights import load_components

        components = load_components(
            face_model=face_model,
            vae=vae,
            image_encoder=image_encoder,
            torch_dtype=torch_dtype,
            device=device,
            local_files_only=local_files_only,
            verify=verify,
        )
        pipe = cls(
            **components, feature_extractor=default_feature_extractor(), scheduler=make_scheduler(scheduler)
        )
        return pipe

    def set_scheduler(self, name: str) -> None:
        """Switch scheduler by name: "ddpm" (reference), "ddim", "dpmsolver++", "unipc"."""
        self.scheduler = make_scheduler(name, dict(self.scheduler.config))

    def _install_processors(self) -> None:
        """Put the method's processors on the three UNets (and the stock ones, with the same
        backend and slicing, on every other attention layer)."""
        from diffusers.models.attention_processor import (
            Attention,
            AttnProcessor2_0,
            SlicedAttnProcessor,
            XFormersAttnProcessor,
        )

        backend, slice_size = self.attention_backend, self.attention_slice_size
        self._source_records: dict = {}
        self._conditioning_records: dict = {}
        self._recorded_blocks = install_recording_processors(
            self.referencenet, self._source_records, backend, slice_size
        )
        conditioning_blocks = install_recording_processors(
            self.conditioning_referencenet, self._conditioning_records, backend, slice_size
        )
        unet_blocks = list(install_reference_processors(self.unet, backend, slice_size))
        if not (self._recorded_blocks == conditioning_blocks == unet_blocks):
            raise ValueError(
                "unet, referencenet and conditioning_referencenet must share one architecture "
                f"(transformer blocks: {unet_blocks} vs {self._recorded_blocks} vs {conditioning_blocks})"
            )
        self._installed_processors = {
            net_name: (
                getattr(self, net_name),
                [
                    (site.name, site.module, site.module.processor)
                    for site in self_attention_sites(getattr(self, net_name))
                ],
            )
            for net_name in _METHOD_NETS
        }
        for net in (self.unet, self.referencenet, self.conditioning_referencenet, self.vae):
            for module in net.modules():
                if isinstance(module, Attention) and not isinstance(module.processor, METHOD_PROCESSORS):
                    if slice_size is not None:
                        module.set_processor(SlicedAttnProcessor(heads_per_slice(slice_size, module.heads)))
                    else:
                        module.set_processor(
                            XFormersAttnProcessor() if backend == "xformers" else AttnProcessor2_0()
                        )

    def restore_attention_processors(self) -> None:
        """Put the method's attention processors back on the three UNets (after something like
        ``pipe.unet.set_attn_processor(...)`` or ``pipe.unet.set_attention_slice(...)`` replaced
        them), keeping the pipeline's attention backend and slicing."""
        self._install_processors()

    def check_attention_processors(self) -> None:
        """Raise when the method's attention processors are not in place on all three UNets.

        Every call checks this first (a few microseconds per layer). Anything that replaces them
        (``unet.set_attn_processor``, ``unet.set_attention_slice``, a LoRA or IP-adapter loader, a new
        ``pipe.unet``) would otherwise make the pipeline return a plain UNet's output without an error.
        The pipeline refuses rather than re-installing them silently: whoever replaced them did it
        on purpose, and undoing that without a word would hide it.
        """
        for net_name in _METHOD_NETS:
            net, sites = self._installed_processors[net_name]
            if getattr(self, net_name) is not net:
                raise MethodProcessorsMissingError(
                    f"pipe.{net_name} was replaced after the pipeline was built, so it lacks the face "
                    "model's reference attention. Call pipe.restore_attention_processors() to install it "
                    "on the new model, or build the pipeline again with the new model."
                )
            for name, module, processor in sites:
                if module.processor is not processor:
                    raise MethodProcessorsMissingError(
                        f"The face model's reference attention was replaced in pipe.{net_name} ({name} "
                        f"now has {type(module.processor).__name__}), so the pipeline would compute a "
                        "plain UNet instead of the method. This happens after unet.set_attn_processor(), "
                        "unet.set_attention_slice() or an adapter loader. Call "
                        "pipe.restore_attention_processors() to put it back; for attention slicing use "
                        "pipe.enable_attention_slicing(), which keeps the method."
                    )

    def set_attention_backend(self, backend: str) -> None:
        """ "sdpa" (PyTorch, default) or "xformers", for every attention layer of the pipeline; the
        method's own processors stay in place and switch their kernel."""
        if backend not in ("sdpa", "xformers"):
            raise ValueError(f"Unknown attention backend {backend!r}; use 'sdpa' or 'xformers'.")
        if backend == "xformers":
            if self.attention_slice_size is not None:
                raise ValueError(
                    "xformers attention and attention slicing do not combine (xformers already "
                    "saves the memory slicing saves): call pipe.disable_attention_slicing() first."
                )
            import xformers.ops  # noqa: F401  (fails here, clearly, when xformers is not installed)
        self.attention_backend = backend
        self._install_processors()

    def enable_xformers_memory_efficient_attention(self, attention_op=None) -> None:
        # diffusers' own version replaces every processor, the method's included.
        self.set_attention_backend("xformers")

    def disable_xformers_memory_efficient_attention(self) -> None:
        self.set_attention_backend("sdpa")

    def enable_attention_slicing(self, slice_size: str | int | None = "auto") -> None:
        """Compute attention a few heads at a time (less memory, a little slower), in the method's
        processors too: ``"auto"`` (half the heads of each layer), ``"max"`` (one head) or a number
        of heads. Heads are independent, so the outputs are the same. SDPA backend only.

        diffusers' own version reaches into the UNets and replaces the method's processors."""
        if slice_size is not None:
            heads_per_slice(slice_size, 1)  # validates
        if slice_size is not None and self.attention_backend == "xformers":
            raise ValueError(
                "attention slicing and xformers attention do not combine (xformers already saves "
                "the memory slicing saves): call pipe.set_attention_backend('sdpa') first."
            )
        self.attention_slice_size = slice_size
        self._install_processors()

    def disable_attention_slicing(self) -> None:
        self.enable_attention_slicing(None)

    # ------------------------------------------------------------------------------------------
    # Inputs

    @staticmethod
    def _image_count(images: ImageInput, name: str) -> int:
        """How many images ``images`` holds (a PIL image / array / tensor, or a list of them);
        raises with what to change when they are not acceptable."""
        if isinstance(images, (PIL.Image.Image, np.ndarray, torch.Tensor)):
            images = [images]
        if not isinstance(images, (list, tuple)) or len(images) == 0:
            raise TypeError(
                f"{name} must be a PIL image, a numpy array, a torch tensor, or a non-empty list of them; "
                f"got {type(images).__name__}."
            )
        count = 0
        for image in images:
            if isinstance(image, PIL.Image.Image):
                count += 1
            elif isinstance(image, np.ndarray):
                count += _check_array(image, name)
            elif isinstance(image, torch.Tensor):
                count += _check_tensor(image, name)
            else:
                raise TypeError(
                    f"{name} contains a {type(image).__name__}; expected PIL images, arrays or tensors."
                )
        return count

    @staticmethod
    def _as_image_list(images: ImageInput) -> list:
        """Split checked images into a list of single RGB PIL images or (3, H, W) float tensors."""
        if isinstance(images, (PIL.Image.Image, np.ndarray, torch.Tensor)):
            images = [images]
        out = []
        for image in images:
            if isinstance(image, PIL.Image.Image):
                out.append(image.convert("RGB"))
            elif isinstance(image, np.ndarray):
                out.extend(_split_array(image))
            else:
                out.extend(list((image[None] if image.ndim == 3 else image).float().cpu()))
        return out

    def check_inputs(
        self,
        source_image,
        conditioning_image,
        anonymization_degree,
        guidance_scale,
        num_inference_steps,
        height,
        width,
        generator,
        latents,
        source_reference=None,
        callback_on_step_end_tensor_inputs=None,
    ):
        """Validate the call's arguments (diffusers' convention: raise, change nothing); messages say
        what to change."""
        batch = self._image_count(conditioning_image, "conditioning_image")
        degrees = (
            anonymization_degree
            if isinstance(anonymization_degree, (list, tuple))
            else [anonymization_degree]
        )
        if isinstance(anonymization_degree, (list, tuple)) and len(degrees) != batch:
            raise ValueError(
                f"anonymization_degree has {len(degrees)} values for {batch} images; give one per image."
            )
        for d in degrees:
            if not isinstance(d, (int, float)) or isinstance(d, bool) or not np.isfinite(d) or d < 0:
                raise ValueError(
                    f"anonymization_degree must be a number >= 0 (1.2-1.3 recommended); got {d!r}."
                )
        if source_reference is not None:
            self._check_source_reference(source_reference, source_image, degrees, height, width)
        elif source_image is None:
            if any(d == 0 for d in degrees):
                raise ValueError(
                    "source_image (or source_reference) is required for face swapping "
                    "(anonymization_degree = 0)."
                )
        elif (sources := self._image_count(source_image, "source_image")) != batch:
            raise ValueError(
                f"source_image has {sources} images but conditioning_image has {batch}; "
                "give one source image per conditioning image."
            )
        self._check_sizes(height, width)
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer; got {num_inference_steps!r}.")
        if not isinstance(guidance_scale, (int, float)) or not np.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a number; got {guidance_scale!r}.")
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(
                f"{len(generator)} generators were given for {batch} images; give one per image."
            )
        expected = (
            batch,
            self.unet.config.in_channels,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        if latents is not None and tuple(latents.shape) != expected:
            raise ValueError(f"latents must have shape {expected}; got {tuple(latents.shape)}.")
        unknown = [
            k for k in callback_on_step_end_tensor_inputs or [] if k not in self._callback_tensor_inputs
        ]
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs has {unknown}; this pipeline can hand the "
                f"callback {self._callback_tensor_inputs}."
            )

    def _check_sizes(self, height, width) -> None:
        for label, value in (("height", height), ("width", width)):
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or value <= 0
                or value % self.vae_scale_factor
            ):
                raise ValueError(
                    f"{label} must be a positive multiple of {self.vae_scale_factor}; got {value!r}."
                )

    def _check_source_reference(self, reference, source_image, degrees, height, width) -> None:
        if not isinstance(reference, SourceReference):
            raise TypeError(
                f"source_reference must come from pipe.encode_source(...); got {type(reference).__name__}."
            )
        if source_image is not None:
            raise ValueError("Give either source_image or source_reference (the encoded source), not both.")
        if any(d != 0 for d in degrees):
            raise ValueError(
                "source_reference is for face swapping (anonymization_degree = 0): anonymization "
                "reads the conditioning image itself, so it has no separate source to reuse."
            )
        if (reference.height, reference.width) != (height, width):
            raise ValueError(
                f"source_reference was encoded at {reference.width}x{reference.height}, this call is "
                f"{width}x{height}: encode the source at the call's size."
            )
        if reference.weights_stamp != _weights_stamp(self.referencenet):
            raise ValueError(
                "source_reference was encoded with other referencenet weights (they changed since, or "
                "it comes from another pipeline): encode the source again with this pipeline."
            )

    def prepare_inputs(self, source_image, conditioning_image, anonymization_degree):
        """Checked inputs as lists: (sources or Nones, conditioning images, one degree per image)."""
        conditioning = self._as_image_list(conditioning_image)
        batch = len(conditioning)
        degrees = (
            anonymization_degree
            if isinstance(anonymization_degree, (list, tuple))
            else [anonymization_degree] * batch
        )
        source = [None] * batch if source_image is None else self._as_image_list(source_image)
        return source, conditioning, [float(d) for d in degrees]

    def _to_unit_pixels(self, images: list, height: int, width: int) -> torch.Tensor:
        """Resize (Lanczos for PIL, as VaeImageProcessor does) to (B, 3, H, W) in [0, 1]."""
        return torch.cat(
            [self.image_processor.preprocess(image, height=height, width=width) for image in images]
        )

    # ------------------------------------------------------------------------------------------
    # The method's pieces

    # diffusers' `_execution_device` and `module.dtype` walk every module (~14 ms and ~1.4 ms at
    # SD 2.1 size): a call looks them up once and passes them on.

    def encode_image_embeddings(
        self, unit_pixels: torch.Tensor, device: torch.device | None = None
    ) -> torch.Tensor:
        """e(I): CLIP pooler output (B, 1, D) of [0, 1] images, through CLIPImageProcessor's PIL path."""
        features = self.feature_extractor(
            images=unit_pixels, do_rescale=False, return_tensors="pt"
        ).pixel_values
        features = features.to(device=device or self._execution_device, dtype=self.image_encoder.dtype)
        return self.image_encoder(features).pooler_output.unsqueeze(1)

    def _vae_posterior(self, unit_pixels: torch.Tensor, device: torch.device | None = None):
        pixels = (2 * unit_pixels - 1).to(device=device or self._execution_device, dtype=self.vae.dtype)
        return self.vae.encode(pixels).latent_dist

    def _null_source_records(self, height: int, width: int) -> dict[str, torch.Tensor]:
        """s0: the source net's records for zero latents and a zero embedding (batch 1).

        Independent of the image, so computed once per model, resolution, device and dtype."""
        net = self.referencenet
        key = (_weights_stamp(net), height, width)
        if key not in self._null_records_cache:
            latents = torch.zeros(
                1,
                net.config.in_channels,
                height // self.vae_scale_factor,
                width // self.vae_scale_factor,
                device=net.device,
                dtype=net.dtype,
            )
            embeddings = torch.zeros(1, 1, net.config.cross_attention_dim, device=net.device, dtype=net.dtype)
            self._null_records_cache = {
                key: run_reference_net(net, self._source_records, latents, embeddings)
            }
        return self._null_records_cache[key]

    def _source_latents(self, posterior, generator, device) -> torch.Tensor:
        """l(S) = scaling * posterior sample, drawn from ``generator`` (the first draw of a call)."""
        noise = randn_tensor(
            posterior.mean.shape, generator=generator, device=device, dtype=posterior.mean.dtype
        )
        return self.vae.config.scaling_factor * (posterior.mean + posterior.std * noise)

    @torch.no_grad()
    def encode_source(
        self,
        source_image: ImageInput,
        generator: torch.Generator | None = None,
        height: int = 512,
        width: int = 512,
    ) -> SourceReference:
        """Encode one source (identity) image for face swapping, once, for many calls.

        Returns a :class:`SourceReference` (the source net's records, the CLIP embedding and VAE
        latents of the source) to pass as ``pipe(None, frames, source_reference=ref, ...)``: the
        source's CLIP, VAE and reference-net passes, and its keys/values in every UNet layer, are then
        computed once instead of once per call. ``generator`` draws the source's VAE sample, the first
        draw of a plain call: a call given ``source_reference`` and a generator seeded as this one
        returns what the plain call ``pipe(source_image, frame, generator=...)`` returns.
        """
        if self._image_count(source_image, "source_image") != 1:
            raise ValueError("encode_source takes one source image; encode each source separately.")
        if isinstance(generator, list):
            raise TypeError("encode_source takes one generator (the source has one VAE sample).")
        self._check_sizes(height, width)
        device = self._execution_device
        pixels = self._to_unit_pixels(self._as_image_list(source_image), height, width)
        embedding = self.encode_image_embeddings(pixels, device).to(self.unet.dtype)
        latents = self._source_latents(self._vae_posterior(pixels, device), generator, device)
        records = run_reference_net(
            self.referencenet, self._source_records, latents.to(self.referencenet.dtype), embedding
        )
        return SourceReference(
            records=records,
            embedding=embedding,
            latents=latents,
            height=height,
            width=width,
            weights_stamp=_weights_stamp(self.referencenet),
        )

    def prepare_references(
        self,
        source: list,
        conditioning: list,
        degrees: list[float],
        height: int,
        width: int,
        do_guidance: bool,
        generator,
        device: torch.device | None = None,
        source_reference: SourceReference | None = None,
    ):
        """Reference tokens per UNet block and the cross-attention embeddings, for every row.

        Returns ``(references, embeddings)``: block -> :class:`~faceanon.attention.BlockReference`
        and (rows, 2, D), rows being [uncond ; cond] with guidance, [cond] without. Random draws, in
        this order: the source VAE sample (drawn and unused with ``source_reference``, so that the
        draws that follow are the plain call's), then the conditioning VAE sample.
        """
        device = device or self._execution_device
        unet_dtype = self.unet.dtype
        batch = len(conditioning)
        degree = torch.tensor(degrees, device=device, dtype=unet_dtype)[:, None, None]
        anonymize = any(d > 0 for d in degrees)

        conditioning_pixels = self._to_unit_pixels(conditioning, height, width)
        conditioning_embeddings = self.encode_image_embeddings(conditioning_pixels, device).to(unet_dtype)
        conditioning_posterior = self._vae_posterior(conditioning_pixels, device)
        if source_reference is None:
            source_embeddings, source_latents = self._source_inputs(
                source,
                degrees,
                conditioning_pixels,
                conditioning_embeddings,
                conditioning_posterior,
                height,
                width,
                generator,
                device,
            )
        else:
            self._source_latents(conditioning_posterior, generator, device)  # the source draw: see above
            source_embeddings = source_reference.embedding.to(device).expand(batch, -1, -1)
        conditioning_latents = self._source_latents(conditioning_posterior, generator, device)

        conditioning_records = run_reference_net(
            self.conditioning_referencenet,
            self._conditioning_records,
            conditioning_latents.to(self.conditioning_referencenet.dtype),
            conditioning_embeddings,
        )
        if source_reference is None:
            source_records = run_reference_net(
                self.referencenet,
                self._source_records,
                source_latents.to(self.referencenet.dtype),
                source_embeddings,
            )
        else:
            source_records = source_reference.records
        null_records = self._null_source_records(height, width) if (do_guidance or anonymize) else None

        # Distinct records once each; per UNet row, the index of its record.
        distinct = len(next(iter(source_records.values())))  # B, or 1 with a source reference
        source_index = torch.arange(distinct).expand(batch) if distinct == 1 else torch.arange(batch)
        conditioning_index = torch.arange(batch)
        if do_guidance:  # uncond rows: s0 (distinct row 0) and the same conditioning records
            source_index = torch.cat([torch.zeros(batch, dtype=torch.long), source_index + 1])
            conditioning_index = torch.cat([conditioning_index, conditioning_index])
        references = {}
        for block in self._recorded_blocks:
            s_src = source_records[block]
            if anonymize:  # records become (1 - d) s' + d s0 (exact no-op for d = 0)
                s_src = (1 - degree) * s_src + degree * null_records[block]
            if do_guidance:
                s_src = torch.cat([null_records[block], s_src])
            references[block] = BlockReference(
                s_src,
                source_index,
                conditioning_records[block],
                conditioning_index,
                source_cache=None if source_reference is None else source_reference.key_values,
                cache_key=(do_guidance, _weights_stamp(self.unet)) if source_reference is not None else None,
            )

        cond_embeddings = torch.cat([source_embeddings, conditioning_embeddings], dim=1)
        if do_guidance:
            uncond_embeddings = torch.cat(
                [torch.zeros_like(source_embeddings), conditioning_embeddings], dim=1
            )
            cond_embeddings = torch.cat([uncond_embeddings, cond_embeddings])
        return references, cond_embeddings

    def _source_inputs(
        self,
        source,
        degrees,
        conditioning_pixels,
        conditioning_embeddings,
        conditioning_posterior,
        height,
        width,
        generator,
        device,
    ):
        """e(S) and l(S) for every item: the source image's for swaps, the conditioning image's
        (embedding scaled by 1 - d) for anonymization."""
        degree = torch.tensor(degrees, device=device, dtype=conditioning_embeddings.dtype)[:, None, None]
        swap_index = [i for i, d in enumerate(degrees) if d == 0]
        source_embeddings = (1 - degree) * conditioning_embeddings
        mean, std = conditioning_posterior.mean.clone(), conditioning_posterior.std.clone()
        if swap_index:
            source_pixels = self._to_unit_pixels([source[i] for i in swap_index], height, width)
            source_embeddings[swap_index] = self.encode_image_embeddings(source_pixels, device).to(
                source_embeddings.dtype
            )
            posterior = self._vae_posterior(source_pixels, device)
            mean[swap_index], std[swap_index] = posterior.mean, posterior.std
        return source_embeddings, self._source_latents(_Posterior(mean, std), generator, device)

    def prepare_latents(
        self,
        batch: int,
        height: int,
        width: int,
        generator,
        latents: torch.Tensor | None,
        device: torch.device | None = None,
    ):
        shape = (
            batch,
            self.unet.config.in_channels,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        device = device or self._execution_device
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=self.latents_dtype)
        else:
            latents = latents.to(device=device, dtype=self.latents_dtype)
        return latents * self.scheduler.init_noise_sigma

    @property
    def latents_dtype(self) -> torch.dtype:
        """The scheduler works in fp32 even when the UNet runs in fp16/bf16 (fp64 stays fp64)."""
        return torch.float64 if self.unet.dtype == torch.float64 else torch.float32

    def _step_kwargs(self, generator) -> dict:
        # Not every scheduler takes a generator (UniPC does not); pass it to those that do.
        return (
            {"generator": generator}
            if "generator" in inspect.signature(self.scheduler.step).parameters
            else {}
        )

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE decode to [-1, 1]. In fp16 a VAE can overflow; then that decode is redone in fp32."""
        vae = self.vae
        image = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
        if vae.dtype == torch.float16 and not torch.isfinite(image).all():
            vae.to(torch.float32)
            try:
                image = vae.decode(latents.float() / vae.config.scaling_factor, return_dict=False)[0]
            finally:
                vae.to(torch.float16)
        return image

    # ------------------------------------------------------------------------------------------
    # Speed options (GPU); all keep the method's processors in place

    def suggested_batch_size(self, height: int = 512, width: int = 512) -> int | None:
        """How many faces one call can take in 80% of the GPU memory that is free now (None on a
        CPU: any number), at ``ACTIVATION_BYTES_PER_FACE_512_FP32`` per face (measured), halved for
        16-bit weights."""
        device = self._execution_device
        if device.type != "cuda":
            return None
        free_bytes, _ = torch.cuda.mem_get_info(device)
        per_face = (
            ACTIVATION_BYTES_PER_FACE_512_FP32 * (height * width) / 512**2 * self.unet.dtype.itemsize / 4
        )
        return max(1, int(0.8 * free_bytes // per_face))

    def enable_channels_last(self) -> None:
        """channels_last memory format for the three UNets (faster convolutions on recent GPUs)."""
        for net in (self.unet, self.referencenet, self.conditioning_referencenet):
            net.to(memory_format=torch.channels_last)

    def compile_unet(self, mode: str | None = None, **kwargs) -> None:
        """``torch.compile`` the denoising UNet in place (the module keeps its type and processors).
        The first call per batch size then compiles (44 s on an H200 in the default mode), later
        calls are faster (0.63 s per face instead of 0.90 s at 512x512, 25 steps, fp16)."""
        self.unet.compile(mode=mode, **kwargs)

    # ------------------------------------------------------------------------------------------
    # The call

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        """Guidance needs the unconditional row only when ``guidance_scale > 1``."""
        return self._guidance_scale > 1

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        """Set ``pipe._interrupt = True`` in a ``callback_on_step_end`` to skip the remaining steps."""
        return self._interrupt

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        source_image: ImageInput | None,
        conditioning_image: ImageInput,
        anonymization_degree: float | list[float] = 0.0,
        guidance_scale: float = 4.0,
        num_inference_steps: int = 25,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        height: int = 512,
        width: int = 512,
        output_type: str = "pil",
        return_dict: bool = True,
        source_reference: SourceReference | None = None,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 (diffusers' signature)
    ):
        r"""Swap (``anonymization_degree=0``: source identity onto the conditioning face) or
        anonymize (``> 0``: the conditioning face gets a new identity; ``source_image`` is then
        not used and may be ``None``; 1.2-1.3 recommended, above 1.5 faces degrade).

        Args:
            source_image, conditioning_image: PIL images, numpy arrays (uint8, or float in [0, 1]),
                tensors in [0, 1], or lists of them (a batch; one output per pair). Resized to
                ``height`` x ``width`` (aspect ratio not kept: pass aligned square crops).
            anonymization_degree: ``d``, one value or one per image.
            guidance_scale: ``g``; the prediction is ``(1 - g) v_uncond + g v_cond`` when ``g > 1``.
            generator: one generator, or one per image for per-image seeds.
            latents: initial noise (B, 4, H/8, W/8), replacing the generator's draw.
            output_type: "pil", "np", "pt" or "latent".
            source_reference: from :meth:`encode_source`, instead of ``source_image`` (swap only): one
                source for every conditioning image, encoded once for many calls.
            callback_on_step_end: ``fn(pipe, step, timestep, callback_kwargs) -> dict``, as in diffusers.
            callback_on_step_end_tensor_inputs: the tensors the callback gets (``_callback_tensor_inputs``).

        Examples:

        Returns:
            :class:`FaceAnonPipelineOutput` (or a tuple when ``return_dict=False``).
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs

        # 1. Check inputs (and that the method's attention is in place)
        self.check_inputs(
            source_image,
            conditioning_image,
            anonymization_degree,
            guidance_scale,
            num_inference_steps,
            height,
            width,
            generator,
            latents,
            source_reference,
            callback_on_step_end_tensor_inputs,
        )
        self.check_attention_processors()
        self._guidance_scale = guidance_scale
        self._interrupt = False

        # 2. Define call parameters
        source, conditioning, degrees = self.prepare_inputs(
            source_image, conditioning_image, anonymization_degree
        )
        batch = len(conditioning)
        device = self._execution_device  # looked up once: it walks every module
        unet_dtype = self.unet.dtype

        # 3. Encode the images: CLIP embeddings, VAE samples, reference records (DESIGN.md 3.1-3.4)
        references, embeddings = self.prepare_references(
            source,
            conditioning,
            degrees,
            height,
            width,
            self.do_classifier_free_guidance,
            generator,
            device,
            source_reference,
        )

        # 4. Prepare the initial noise
        latents = self.prepare_latents(batch, height, width, generator, latents, device)

        # 5. Prepare timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        step_kwargs = self._step_kwargs(generator)

        # 6. Denoising loop
        set_references(self.unet, references)
        try:
            for i, t in enumerate(self.progress_bar(timesteps)):
                if self.interrupt:
                    continue
                latents = self._denoise_step(
                    latents,
                    t,
                    embeddings,
                    guidance_scale,
                    self.do_classifier_free_guidance,
                    step_kwargs,
                    unet_dtype,
                )
                if callback_on_step_end is not None:
                    step_tensors = {"latents": latents}
                    callback_kwargs = {k: step_tensors[k] for k in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                    latents = callback_outputs.pop("latents", latents)
        finally:
            set_references(self.unet, None)  # free the cached keys/values

        # 7. Decode
        if output_type == "latent":
            images = latents
        else:
            decoded = self.decode_latents(latents)
            images = self.image_processor.postprocess(
                decoded.to(self.latents_dtype), output_type=output_type, do_denormalize=[True] * batch
            )
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return FaceAnonPipelineOutput(images=images)

    def _denoise_step(self, latents, t, embeddings, guidance_scale, do_guidance, step_kwargs, unet_dtype):
        model_input = torch.cat([latents] * 2) if do_guidance else latents
        model_input = self.scheduler.scale_model_input(model_input, t).to(unet_dtype)
        prediction = self.unet(model_input, t, encoder_hidden_states=embeddings, return_dict=False)[0].to(
            latents.dtype
        )
        if do_guidance:
            uncond, cond = prediction.chunk(2)
            prediction = (1 - guidance_scale) * uncond + guidance_scale * cond
        return self.scheduler.step(prediction, t, latents, **step_kwargs, return_dict=False)[0]

    # ------------------------------------------------------------------------------------------
    # Conveniences for aligned 512x512 face crops

    def anonymize(self, image: ImageInput, degree: float = 1.25, seed: int | list[int] = 0, **kwargs):
        """A new identity for an aligned face crop (or a list: one seed each, ``seed + i`` by default)."""
        single = not isinstance(image, (list, tuple))
        images = [image] if single else list(image)
        generators = _generators(seed, len(images))
        out = self(None, images, anonymization_degree=degree, generator=generators, **kwargs).images
        return out[0] if single else out

    def swap(self, source: ImageInput, target: ImageInput, seed: int | list[int] = 0, **kwargs):
        """The identity of ``source`` on the face of ``target`` (pose, expression, background kept)."""
        single = not isinstance(target, (list, tuple))
        targets = [target] if single else list(target)
        sources = [source] * len(targets) if not isinstance(source, (list, tuple)) else list(source)
        generators = _generators(seed, len(targets))
        out = self(sources, targets, anonymization_degree=0.0, generator=generators, **kwargs).images
        return out[0] if single else out


def _check_array(array: np.ndarray, name: str) -> int:
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise ValueError(f"{name}: numpy images must be (H, W, 3) or (B, H, W, 3); got shape {array.shape}.")
    if array.dtype != np.uint8 and (array.min() < 0 or array.max() > 1):
        raise ValueError(f"{name}: float numpy images must be in [0, 1] (or uint8 in [0, 255]).")
    return len(array)


def _split_array(array: np.ndarray) -> list:
    array = array[None] if array.ndim == 3 else array
    if array.dtype == np.uint8:
        return [PIL.Image.fromarray(a.squeeze(-1) if a.shape[-1] == 1 else a).convert("RGB") for a in array]
    array = array.astype(np.float32)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return [torch.from_numpy(a).permute(2, 0, 1) for a in array]


def _check_tensor(tensor: torch.Tensor, name: str) -> int:
    tensor = tensor[None] if tensor.ndim == 3 else tensor
    if tensor.ndim != 4 or tensor.shape[1] != 3:
        raise ValueError(
            f"{name}: tensors must be (3, H, W) or (B, 3, H, W) in [0, 1]; got shape {tuple(tensor.shape)}."
        )
    if tensor.min() < 0 or tensor.max() > 1:
        raise ValueError(f"{name}: tensors must hold values in [0, 1].")
    return len(tensor)


def _weights_stamp(net: torch.nn.Module) -> int:
    """Changes with any in-place update of the weights (load_state_dict, LoRA fusing...)."""
    return hash((id(net), net.dtype, net.device, tuple((p.data_ptr(), p._version) for p in net.parameters())))


def _generators(seed: int | list[int], count: int) -> list[torch.Generator]:
    seeds = list(seed) if isinstance(seed, (list, tuple)) else [int(seed) + i for i in range(count)]
    if len(seeds) != count:
        raise ValueError(f"{len(seeds)} seeds were given for {count} images; give one per image.")
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def default_feature_extractor() -> CLIPImageProcessorPil:
    """CLIP ViT-L/14 preprocessing, PIL path (the torchvision one resizes differently)."""
    return CLIPImageProcessorPil(**CLIP_PREPROCESSOR_CONFIG)
