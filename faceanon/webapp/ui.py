"""The page: Anonymize and Swap tabs, examples, and the named API they expose."""

from __future__ import annotations

import inspect
from pathlib import Path

import gradio as gr

from faceanon.registry import DEFAULTS
from faceanon.webapp import handlers as H
from faceanon.webapp.components import KeepPhotos, PhotoInput
from faceanon.webapp.limits import Limits
from faceanon.webapp.report import FACE_TABLE_HEADERS
from faceanon.webapp.service import ModelHost
from faceanon.webapp.video_tab import video_tab

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
TITLE = "faceanon — Face Anonymization Made Simple"

INTRO = """
# faceanon
Give every face in a photo a **new, non-existent identity** that keeps its pose, expression and
lighting — the method of Kung et al., *Face Anonymization Made Simple* (WACV 2025) — or simply blur,
pixelate or cover it. Uploads and results are deleted from this server after {minutes} minutes;
results carry no metadata of your photo.
"""

DEGREE_INFO = (
    "0 reconstructs the face; 1.2–1.3 (recommended) gives a new, natural identity; "
    "above 1.5 faces stop looking real."
)
METHOD_INFO = "diffusion gives a new face; blur, pixelate and solid redact it (instant, no model needed)."

CSS = """
#status {padding: 0.4em 0.8em; border-radius: 8px; background: var(--block-background-fill);}
#summary table {font-size: 0.9em;}
.faceanon-message {padding: 0.5em 0.8em; border-radius: 8px;
                   border: 1px solid var(--error-border-color, #f87171);
                   background: var(--error-background-fill, #fef2f2);}
"""


def _doc(fn) -> str:
    """The handler's whole docstring (parameters included) as the endpoint's API description."""
    return inspect.getdoc(fn) or ""


def example_path(name: str) -> str:
    return str(EXAMPLES_DIR / name)


def build_demo(host: ModelHost, limits: Limits, gpu_present: bool = False) -> gr.Blocks:
    """Builds the Blocks app. `gpu_present` lets diffusion examples be cached on first use."""
    H.configure(host, limits)
    with gr.Blocks(title=TITLE, delete_cache=limits.delete_cache) as demo:
        gr.Markdown(INTRO.format(minutes=max(1, limits.cache_max_age_s // 60)))
        status = gr.Markdown(host.status_markdown(), elem_id="status")
        with gr.Tabs():
            with gr.Tab("Anonymize", id="anonymize"):
                method = _anonymize_tab(gpu_present, host.default_method)
            with gr.Tab("Swap", id="swap"):
                _swap_tab()
            with gr.Tab("Video", id="video"):
                video_tab()
            with gr.Tab("Evaluate", id="evaluate"):
                estimate, settings = _evaluate_tab()
        _status_updates(demo, host, status)
        # Preselect a method that works on this server now (diffusion once its weights are loaded).
        demo.load(
            lambda: gr.Radio(value=host.default_method), outputs=method, api_visibility="private", queue=False
        )
        demo.load(H.evaluation_estimate, settings, estimate, api_visibility="private", queue=False)
    return demo


def _status_updates(demo: gr.Blocks, host: ModelHost, status: gr.Markdown) -> None:
    """Refreshes the status line on page load, and every few seconds while the weights load."""
    timer = gr.Timer(3.0, active=host.state == ModelHost.LOADING)

    def refresh():
        return host.status_markdown(), gr.Timer(active=host.state == ModelHost.LOADING)

    demo.load(refresh, outputs=[status, timer], api_visibility="private", queue=False)
    timer.tick(refresh, outputs=[status, timer], api_visibility="private", queue=False)


def _seed_controls():
    with gr.Row():
        seed = gr.Number(value=DEFAULTS.seed, precision=0, minimum=0, maximum=H.MAX_SEED, label="Seed")
        randomize = gr.Checkbox(value=False, label="Randomize seed", info="New result each run")
    return seed, randomize


def _diffusion_settings(max_steps: int, with_scheduler: bool = False) -> list:
    with gr.Accordion("Advanced settings (diffusion)", open=False):
        controls = [
            gr.Slider(
                1,
                max_steps,
                value=DEFAULTS.steps,
                step=1,
                label="Steps",
                info="Denoising steps per face: more is slower and finer.",
            ),
            gr.Slider(
                1.0,
                10.0,
                value=DEFAULTS.guidance,
                step=0.5,
                label="Guidance",
                info="Classifier-free guidance scale (4 in the paper).",
            ),
        ]
        if with_scheduler:
            controls.append(
                gr.Dropdown(
                    H.SCHEDULERS,
                    value="default",
                    label="Sampler (scheduler)",
                    info="'default' is the model's own (DDPM).",
                )
            )
    return controls


def _anonymize_tab(gpu_present: bool, default_method: str) -> gr.Radio:
    """The Anonymize tab; returns its method picker (the page load sets it to what works here)."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            image = PhotoInput(label="Photo", height=380, elem_id="anon-input")
            method = gr.Radio(
                H.METHODS, value=default_method, label="Method", info=METHOD_INFO, elem_id="method"
            )
            degree = gr.Slider(
                0.0,
                DEFAULTS.max_degree,
                value=DEFAULTS.degree,
                step=0.05,
                label="Anonymization degree d",
                info=DEGREE_INFO,
                elem_id="degree",
            )
            degree_note = gr.Markdown("")
            # The button sits level with the result (top of the right column), so the result
            # appears where the person is looking; the rest of the settings come below it.
            run = gr.Button("Anonymize", variant="primary", elem_id="anonymize-button")
            error = gr.Markdown(visible=False, elem_id="anon-message", elem_classes=["faceanon-message"])
            seed, randomize = _seed_controls()
            steps, guidance, scheduler = _diffusion_settings(H._LIMITS.max_steps, with_scheduler=True)
            picker = _face_picker(image)
            keep = KeepPhotos("Keep these people (a photo of each; their faces stay untouched)", "keep")
        with gr.Column(scale=1):
            result = gr.Image(
                label="Anonymized",
                format="png",
                interactive=False,
                height=420,
                buttons=["download", "fullscreen"],
                elem_id="anon-output",
            )
            summary = gr.Markdown(elem_id="summary")
            table = gr.Dataframe(
                headers=FACE_TABLE_HEADERS,
                label="Per face",
                interactive=False,
                visible=False,
                max_height=300,
                wrap=True,
                elem_id="face-table",
            )
            with gr.Accordion("Before / after", open=True):
                compare = gr.ImageSlider(
                    label="Before / after", format="png", interactive=False, elem_id="compare"
                )
            with gr.Accordion("Report (JSON)", open=False):
                report = gr.JSON(label="Per-face report")
            api_anonymize = gr.Button(visible=False)  # the named API endpoints' triggers (no UI)
            api_detect = gr.Button(visible=False)

    inputs = [image, method, degree, seed, randomize, picker["faces"], steps, guidance, scheduler, keep]
    outputs = [result, summary, report, seed]
    photo_work = dict(concurrency_id="photo", concurrency_limit=H._LIMITS.requests_at_once)
    run.click(
        H.page_anonymize,
        [*inputs, picker["found"], picker["chosen"]],
        [*outputs, compare, table, error],
        api_visibility="private",
        show_progress_on=[result],
        **photo_work,
    ).then(None, js=SCROLL_TO_RESULT)
    api_anonymize.click(
        H.anonymize, inputs, outputs, api_name="anonymize", api_description=_doc(H.anonymize), **photo_work
    )
    api_detect.click(
        H.detect,
        image,
        [picker["detected"], picker["json"]],
        api_name="detect",
        api_description=_doc(H.detect),
        **photo_work,
    )
    image.change(
        H.page_detect,
        image,
        [
            picker["detected"],
            picker["found"],
            picker["choose"],
            picker["chosen"],
            picker["faces"],
            picker["note"],
            error,
        ],
        api_visibility="private",
        show_progress_on=[picker["detected"]],
        **photo_work,
    )
    degree.change(H.degree_hint, degree, degree_note, api_visibility="private", queue=False)
    _anonymize_examples(inputs, outputs, gpu_present)
    return method


SCROLL_TO_RESULT = """() => {
  const message = document.querySelector('#anon-message');
  const shown = message && message.offsetParent !== null && message.innerText.trim();
  const target = document.querySelector(shown ? '#anon-message' : '#anon-output');
  if (target) target.scrollIntoView({behavior: 'smooth', block: 'nearest'});
}"""


def _face_picker(image) -> dict:
    """Faces to change, for crowds too: click a face on the picture to toggle it, all / none, or
    tick numbers; the picture greys out the faces left as is."""
    with gr.Accordion("Faces", open=True):
        note = gr.Markdown("", elem_id="selection-note")
        detected = gr.Image(
            label="Detected faces (click a face to select or leave it)",
            interactive=False,
            height=320,
            format="png",
            elem_id="detected",
        )
        with gr.Row():
            every = gr.Button("Select all", size="sm", elem_id="select-all")
            nobody = gr.Button("Select none", size="sm", elem_id="select-none")
        with gr.Accordion("Faces by number", open=False, elem_id="faces-by-number"):
            choose = gr.CheckboxGroup(label="Faces to change (none found yet)", elem_id="choose-faces")
        faces = gr.Textbox(value="all", label="Faces (for the API)", visible=False)
        faces_json = gr.JSON(visible=False)  # /detect's output
    # The page's truth, kept on the server: the faces found and those selected (see H._new_selection).
    found, chosen = gr.State([]), gr.State([])
    shown = [detected, faces, note]
    private = dict(
        api_visibility="private",
        show_progress="hidden",
        concurrency_id="picker",
        concurrency_limit=H._LIMITS.cpu_jobs,
    )
    detected.select(H.toggle_face, [image, found, chosen], [chosen, choose, *shown], **private)
    every.click(H.select_all, [image, found], [chosen, choose, *shown], **private)
    nobody.click(H.select_none, [image, found], [chosen, choose, *shown], **private)
    choose.input(H.select_numbers, [image, found, choose], [chosen, *shown], **private)
    return {
        "detected": detected,
        "json": faces_json,
        "found": found,
        "chosen": chosen,
        "choose": choose,
        "faces": faces,
        "note": note,
    }


def _anonymize_examples(inputs, outputs, gpu_present: bool) -> None:
    image, method, degree, seed = inputs[:4]
    gr.Examples(
        label="Examples: redaction (no model needed)",
        examples=[
            [example_path("two_portraits.jpg"), "blur", 1.25, 0],
            [example_path("grace_hopper.jpg"), "pixelate", 1.25, 0],
            [example_path("astronaut.jpg"), "solid", 1.25, 0],
        ],
        inputs=[image, method, degree, seed],
        outputs=outputs,
        fn=_example_anonymize,
        cache_examples=True,
        cache_mode="lazy",
        api_name=False,
        elem_id="redaction-examples",
    )
    gr.Examples(
        label="Examples: new identities (diffusion)",
        examples=[
            [example_path("astronaut.jpg"), "diffusion", 1.25, 0],
            [example_path("grace_hopper.jpg"), "diffusion", 1.25, 7],
            [example_path("two_portraits.jpg"), "diffusion", 1.3, 1],
        ],
        inputs=[image, method, degree, seed],
        outputs=outputs,
        fn=_example_anonymize,
        # Cached on first use only where a GPU makes that quick; on a CPU the example just fills the
        # form, and the Anonymize button then shows step-by-step progress.
        cache_examples=gpu_present,
        cache_mode="lazy" if gpu_present else None,
        api_name=False,
        elem_id="diffusion-examples",
    )


def _example_anonymize(image, method, degree, seed):
    return H.anonymize(
        image,
        method,
        degree,
        seed,
        False,
        "all",
        DEFAULTS.steps,
        DEFAULTS.guidance,
        "default",
        progress=_no_progress,
    )


def _no_progress(*_args, **_kwargs):
    return None


def _swap_tab() -> None:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            with gr.Row():
                source = PhotoInput(label="Source face (identity)", height=260, elem_id="swap-source")
                target = PhotoInput(label="Target photo", height=260, elem_id="swap-target")
            with gr.Row():
                source_face = gr.Number(
                    value=0,
                    precision=0,
                    minimum=0,
                    label="Source face #",
                    info="Which face of the source photo gives the identity.",
                )
                target_faces = gr.Textbox(
                    value="all", label="Target faces", info="'all' or face numbers such as '0, 2'."
                )
            seed, randomize = _seed_controls()
            steps, guidance = _diffusion_settings(H._LIMITS.max_steps)
            run = gr.Button("Swap faces", variant="primary", elem_id="swap-button")
        with gr.Column(scale=1):
            result = gr.Image(
                label="Swapped",
                format="png",
                interactive=False,
                height=420,
                buttons=["download", "fullscreen"],
                elem_id="swap-output",
            )
            summary = gr.Markdown()
            with gr.Accordion("Report (JSON)", open=False):
                report = gr.JSON(label="Per-face report")
    run.click(
        H.swap,
        [source, target, source_face, target_faces, seed, randomize, steps, guidance],
        [result, summary, report, seed],
        api_name="swap",
        api_description=_doc(H.swap),
        concurrency_id="model",
        concurrency_limit=H._LIMITS.gpu_jobs,
    )
    gr.Examples(
        examples=[[example_path("astronaut.jpg"), example_path("grace_hopper.jpg")]],
        inputs=[source, target],
        label="Example (needs the diffusion model)",
    )


EVALUATE_INTRO = """
Measure how anonymous the result is for **your** photo, as the paper's supplementary material does:
identity similarity to the original face (ArcFace; below the line means a different person), whether
two independent face detectors still find a face, and how much pose and expression changed — for each
degree d and seed, with blur, pixelate and solid as baselines.
"""


def _evaluate_tab() -> tuple:
    """The Evaluate tab; returns (estimate, settings) for the page load to fill the estimate."""
    gr.Markdown(EVALUATE_INTRO)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            image = PhotoInput(label="Photo", height=300, elem_id="eval-input")
        with gr.Column(scale=2):
            degrees = gr.Textbox(
                value="0.6, 1.2, 1.5",
                label="Degrees d",
                info="Comma-separated; the supplementary used 0.3, 0.6, 0.9, 1.2, 1.4, 1.5.",
            )
            with gr.Row():
                seeds = gr.Number(value=1, precision=0, minimum=1, maximum=10, label="Seeds per degree")
                steps = gr.Slider(1, H._LIMITS.max_steps, value=DEFAULTS.steps, step=1, label="Steps")
            baselines = gr.Checkbox(value=True, label="Include blur / pixelate / solid baselines")
            estimate = gr.Markdown(elem_id="eval-estimate")
            run = gr.Button("Evaluate", variant="primary", elem_id="evaluate-button")
    # Full width, two per row: the plots are read on the page, not opened one by one.
    with gr.Row():
        plots = [
            gr.Image(
                label=name,
                format="png",
                interactive=False,
                height=380,
                elem_id=f"eval-plot-{i}",
                buttons=["download", "fullscreen"],
            )
            for i, name in enumerate(("Identity vs d", "Detection vs d"))
        ]
    with gr.Row():
        plots.append(
            gr.Image(
                label="Pose / expression vs d",
                format="png",
                interactive=False,
                height=380,
                elem_id="eval-plot-2",
                buttons=["download", "fullscreen"],
            )
        )
    table = gr.Dataframe(
        headers=H.EVALUATION_HEADERS,
        label="Per face and run",
        interactive=False,
        wrap=True,
        max_height=360,
        elem_id="eval-table",
    )
    settings = [degrees, seeds, steps, baselines]
    for control in settings:
        control.change(H.evaluation_estimate, settings, estimate, api_visibility="private", queue=False)
    run.click(
        H.evaluate,
        [image, *settings],
        [*plots, table],
        api_name="evaluate",
        api_description=_doc(H.evaluate),
        concurrency_id="evaluate",
        concurrency_limit=H._LIMITS.gpu_jobs,
        show_progress_on=[plots[0]],
    )
    return estimate, settings
