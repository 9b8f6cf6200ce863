"""The page: Anonymize and Swap tabs, examples, and the named API they expose."""

from __future__ import annotations

import inspect
from pathlib import Path

import gradio as gr

from faceanon.webapp import handlers as H
from faceanon.webapp.components import PhotoInput
from faceanon.webapp.limits import Limits
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

DEGREE_INFO = ("0 reconstructs the face; 1.2–1.3 (recommended) gives a new, natural identity; "
               "above 1.5 faces stop looking real.")
METHOD_INFO = "diffusion gives a new face; blur, pixelate and solid redact it (instant, no model needed)."

CSS = """
#status {padding: 0.4em 0.8em; border-radius: 8px; background: var(--block-background-fill);}
#summary table {font-size: 0.9em;}
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
                _anonymize_tab(gpu_present)
            with gr.Tab("Swap", id="swap"):
                _swap_tab()
            with gr.Tab("Video", id="video"):
                video_tab()
            with gr.Tab("Evaluate", id="evaluate"):
                _evaluate_tab()
        _status_updates(demo, host, status)
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
        seed = gr.Number(value=0, precision=0, minimum=0, maximum=H.MAX_SEED, label="Seed")
        randomize = gr.Checkbox(value=False, label="Randomize seed", info="New result each run")
    return seed, randomize


def _diffusion_settings(max_steps: int, with_scheduler: bool = False) -> list:
    with gr.Accordion("Advanced settings (diffusion)", open=False):
        controls = [
            gr.Slider(1, max_steps, value=25, step=1, label="Steps",
                      info="Denoising steps per face: more is slower and finer."),
            gr.Slider(1.0, 10.0, value=4.0, step=0.5, label="Guidance",
                      info="Classifier-free guidance scale (4 in the paper)."),
        ]
        if with_scheduler:
            controls.append(gr.Dropdown(H.SCHEDULERS, value="default", label="Sampler (scheduler)",
                                        info="'default' is the model's own (DDPM)."))
    return controls


def _anonymize_tab(gpu_present: bool) -> None:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            image = PhotoInput(label="Photo", height=380, elem_id="anon-input")
            method = gr.Radio(H.METHODS, value="diffusion", label="Method", info=METHOD_INFO, elem_id="method")
            degree = gr.Slider(0.0, 2.0, value=1.25, step=0.05, label="Anonymization degree d",
                               info=DEGREE_INFO, elem_id="degree")
            degree_note = gr.Markdown("")
            seed, randomize = _seed_controls()
            steps, guidance, scheduler = _diffusion_settings(H._LIMITS.max_steps, with_scheduler=True)
            with gr.Accordion("Faces", open=True):
                detected = gr.Image(label="Detected faces", interactive=False, height=260, format="png",
                                    elem_id="detected")
                choose = gr.CheckboxGroup(label="Faces to change (none found yet)", elem_id="choose-faces")
                faces = gr.Textbox(value="all", label="Faces (for the API)", visible=False)
                faces_json = gr.JSON(visible=False)
            run = gr.Button("Anonymize", variant="primary", elem_id="anonymize-button")
        with gr.Column(scale=1):
            result = gr.Image(label="Anonymized", format="png", interactive=False, height=420,
                              buttons=["download", "fullscreen"], elem_id="anon-output")
            summary = gr.Markdown(elem_id="summary")
            with gr.Accordion("Before / after", open=False):
                compare = gr.ImageSlider(label="Before / after", format="png", interactive=False)
            with gr.Accordion("Report (JSON)", open=False):
                report = gr.JSON(label="Per-face report")
            find = gr.Button("Detect faces", variant="secondary", visible=False)

    outputs = [result, summary, report, seed]
    inputs = [image, method, degree, seed, randomize, faces, steps, guidance, scheduler]
    run.click(H.anonymize, inputs, outputs, api_name="anonymize", api_description=_doc(H.anonymize),
              concurrency_id="model",
              concurrency_limit=H._LIMITS.gpu_jobs).then(
        _before_after, [image, result], compare, api_visibility="private", queue=False)
    find.click(H.detect, image, [detected, faces_json], api_name="detect", api_description=_doc(H.detect),
               concurrency_limit=4)
    image.change(H.detect, image, [detected, faces_json], api_visibility="private", concurrency_limit=4)
    faces_json.change(H.face_choices, faces_json, choose, api_visibility="private", queue=False)
    choose.input(H.faces_spec, [choose, faces_json], faces, api_visibility="private", queue=False)
    faces_json.change(lambda _: "all", faces_json, faces, api_visibility="private", queue=False)
    degree.change(H.degree_hint, degree, degree_note, api_visibility="private", queue=False)

    _anonymize_examples(inputs, outputs, gpu_present)


def _before_after(original, result):
    if not original or result is None:
        return None
    return (H.load_photo(original), result)


def _anonymize_examples(inputs, outputs, gpu_present: bool) -> None:
    image, method, degree, seed = inputs[:4]
    gr.Examples(
        label="Examples: redaction (no model needed)",
        examples=[[example_path("two_portraits.jpg"), "blur", 1.25, 0],
                  [example_path("grace_hopper.jpg"), "pixelate", 1.25, 0],
                  [example_path("astronaut.jpg"), "solid", 1.25, 0]],
        inputs=[image, method, degree, seed], outputs=outputs, fn=_example_anonymize,
        cache_examples=True, cache_mode="lazy", api_name=False, elem_id="redaction-examples",
    )
    gr.Examples(
        label="Examples: new identities (diffusion)",
        examples=[[example_path("astronaut.jpg"), "diffusion", 1.25, 0],
                  [example_path("grace_hopper.jpg"), "diffusion", 1.25, 7],
                  [example_path("two_portraits.jpg"), "diffusion", 1.3, 1]],
        inputs=[image, method, degree, seed], outputs=outputs, fn=_example_anonymize,
        # Cached on first use only where a GPU makes that quick; on a CPU the example just fills the
        # form, and the Anonymize button then shows step-by-step progress.
        cache_examples=gpu_present, cache_mode="lazy" if gpu_present else None, api_name=False,
        elem_id="diffusion-examples",
    )


def _example_anonymize(image, method, degree, seed):
    return H.anonymize(image, method, degree, seed, False, "all", 25, 4.0, "default", progress=_no_progress)


def _no_progress(*_args, **_kwargs):
    return None


def _swap_tab() -> None:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            with gr.Row():
                source = PhotoInput(label="Source face (identity)", height=260, elem_id="swap-source")
                target = PhotoInput(label="Target photo", height=260, elem_id="swap-target")
            with gr.Row():
                source_face = gr.Number(value=0, precision=0, minimum=0, label="Source face #",
                                        info="Which face of the source photo gives the identity.")
                target_faces = gr.Textbox(value="all", label="Target faces",
                                          info="'all' or face numbers such as '0, 2'.")
            seed, randomize = _seed_controls()
            steps, guidance = _diffusion_settings(H._LIMITS.max_steps)
            run = gr.Button("Swap faces", variant="primary", elem_id="swap-button")
        with gr.Column(scale=1):
            result = gr.Image(label="Swapped", format="png", interactive=False, height=420,
                              buttons=["download", "fullscreen"], elem_id="swap-output")
            summary = gr.Markdown()
            with gr.Accordion("Report (JSON)", open=False):
                report = gr.JSON(label="Per-face report")
    run.click(H.swap, [source, target, source_face, target_faces, seed, randomize, steps, guidance],
              [result, summary, report, seed], api_name="swap", api_description=_doc(H.swap),
              concurrency_id="model",
              concurrency_limit=H._LIMITS.gpu_jobs)
    gr.Examples(
        examples=[[example_path("astronaut.jpg"), example_path("grace_hopper.jpg")]],
        inputs=[source, target], label="Example (needs the diffusion model)",
    )


EVALUATE_INTRO = """
Measure how anonymous the result is for **your** photo, as the paper's supplementary material does:
identity similarity to the original face (ArcFace; below the line means a different person), whether
two independent face detectors still find a face, and how much pose and expression changed — for each
degree d and seed, with blur, pixelate and solid as baselines.
"""


def _evaluate_tab() -> None:
    gr.Markdown(EVALUATE_INTRO)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            image = PhotoInput(label="Photo", height=300, elem_id="eval-input")
            degrees = gr.Textbox(value="0.3, 0.6, 0.9, 1.2, 1.4, 1.5", label="Degrees d",
                                 info="Comma-separated (the supplementary's values by default).")
            with gr.Row():
                seeds = gr.Number(value=2, precision=0, minimum=1, maximum=10, label="Seeds per degree")
                steps = gr.Slider(1, H._LIMITS.max_steps, value=25, step=1, label="Steps")
            baselines = gr.Checkbox(value=True, label="Include blur / pixelate / solid baselines")
            run = gr.Button("Evaluate", variant="primary", elem_id="evaluate-button")
        with gr.Column(scale=2):
            with gr.Row():
                plots = [gr.Image(label=name, format="png", interactive=False, height=260)
                         for name in ("Identity vs d", "Detection vs d", "Pose / expression vs d")]
            table = gr.Dataframe(headers=H.EVALUATION_COLUMNS, label="Per face and run", interactive=False,
                                 wrap=True, max_height=320)
    run.click(H.evaluate, [image, degrees, seeds, steps, baselines], [*plots, table], api_name="evaluate",
              api_description=_doc(H.evaluate), concurrency_id="model", concurrency_limit=H._LIMITS.gpu_jobs)
