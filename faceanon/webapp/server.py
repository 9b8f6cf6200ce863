"""`python app.py` / `faceanon serve`: build the app, load the models, and serve it."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import logging
import os
import signal
import socket
import threading

import spaces  # noqa: F401  (must come before torch touches CUDA on a ZeroGPU Space)
from starlette.middleware import Middleware

from faceanon.speed import add_speed_arguments, speed_options_from_args
from faceanon.webapp.uploads import CleanUploads, ServerTempDir

log = logging.getLogger("faceanon.webapp")


def on_zero_gpu() -> bool:
    from spaces.config import Config

    return bool(Config.zero_gpu)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="faceanon serve", description="Serve the faceanon web app.")
    parser.add_argument(
        "--host",
        default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument(
        "--device", default=None, help="torch device for diffusion (default: cuda if any, else cpu)"
    )
    parser.add_argument(
        "--download-weights",
        action="store_true",
        help="download missing diffusion weights from the hub in the background "
        "(default: use local files only; see `faceanon download`)",
    )
    parser.add_argument("--max-file-size", default=None, help="largest upload, e.g. 20mb")
    parser.add_argument("--max-megapixels", type=int, default=None, help="largest photo in megapixels")
    parser.add_argument("--gpu-jobs", type=int, default=None, help="diffusion jobs at once (one per GPU)")
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=float(os.environ.get("FACEANON_SHUTDOWN_GRACE", "3")),
        help="on SIGTERM, seconds that jobs in flight get to finish before they are stopped with a "
        "message (default 3, env FACEANON_SHUTDOWN_GRACE; stopping and closing take up to 6 s more, "
        "so keep it under your orchestrator's stop timeout minus 6: docker waits 10 s)",
    )
    parser.add_argument("--quiet", action="store_true", help="less console output")
    add_speed_arguments(parser)
    return parser.parse_args(argv)


def _limits(args):
    from dataclasses import replace

    from faceanon.webapp.limits import Limits

    limits = Limits.from_env()
    overrides = {
        "max_file_size": args.max_file_size,
        "max_megapixels": args.max_megapixels,
        "gpu_jobs": args.gpu_jobs,
    }
    return replace(limits, **{k: v for k, v in overrides.items() if v is not None})


def create_app(args: argparse.Namespace):
    """(demo, host, limits): the Blocks app with its models loading (synchronously on ZeroGPU)."""
    from faceanon.webapp.service import ModelHost

    limits = _limits(args)
    zero_gpu = on_zero_gpu()
    host = ModelHost(
        device=args.device,
        local_files_only=not args.download_weights,
        speed=speed_options_from_args(args),
        cpu_jobs=limits.cpu_jobs,
    )
    # ZeroGPU only moves models that exist before launch onto the GPU; elsewhere never block start-up.
    host.start(background=not zero_gpu)
    from faceanon.webapp.ui import CSS, build_demo  # imports Gradio meanwhile (seconds)

    host.wait_for_check()  # the page's first status line says whether diffusion is coming
    demo = build_demo(host, limits, gpu_present=zero_gpu or _cuda_available())
    demo.queue(default_concurrency_limit=4, max_size=64)
    return demo, host, limits, CSS


def _cuda_available() -> bool:
    # Checking needs torch (~2 s); only worth it when a GPU driver is there at all.
    if not os.path.exists("/proc/driver/nvidia"):
        return False
    import torch

    return torch.cuda.is_available()


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    problem = port_problem(args.host, args.port)
    if problem:  # before any model loads: say it in one line, not as a traceback
        log.error(problem)
        return 2
    temp = ServerTempDir()
    temp.claim()  # before the app is built: Gradio reads GRADIO_TEMP_DIR then
    atexit.register(temp.release)
    served = _Served()
    _shutdown_cleanly_on_sigterm(served, args.shutdown_grace)
    log.info(
        "uploads and results are kept in %s (deleted at shutdown, and at the next start after a crash)",
        temp.path,
    )
    demo, _host, limits, css = create_app(args)
    served.demo = demo
    try:
        demo.launch(
            server_name=args.host,
            server_port=args.port,
            share=args.share,
            max_file_size=limits.max_file_size,
            show_error=True,  # faceanon's errors are written for people
            footer_links=["api", "gradio"],
            css=css,
            theme=_theme(),
            quiet=args.quiet,
            app_kwargs={"middleware": [Middleware(CleanUploads, max_megapixels=limits.max_megapixels)]},
        )
    except OSError as error:  # the port was taken between the check and the launch
        if "port" not in str(error).lower():
            raise
        log.error(port_problem(args.host, args.port) or str(error))
        return 2
    _exit_now_if_jobs_still_run(temp)
    return 0


def _exit_now_if_jobs_still_run(temp: ServerTempDir) -> None:
    """A job that did not stop in time (a CPU diffusion step can take longer than the drain waits)
    would make Python's exit abort inside OpenCV / onnxruntime / torch code before any clean-up: so
    delete the temp folder first and leave without waiting for it."""
    from faceanon.webapp.shutdown import JOBS

    if JOBS.running:
        log.warning("%d job(s) still running at exit: temp folder deleted, exiting now", JOBS.running)
        temp.release()
        logging.shutdown()
        os._exit(0)


def port_problem(host: str, port: int) -> str | None:
    """A one-line message when `host:port` cannot be listened on (in use, or not allowed); else None."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return (
                    f"Port {port} on {host} is already in use (another faceanon or web server?). "
                    f"Stop it, or choose another port: use --port {port + 1}."
                )
            return (
                f"Cannot listen on {host}:{port} ({error.strerror}). Use --host / --port to choose another."
            )
    return None


class _Served:
    """The app being served, once it is built (what a SIGTERM drains and closes)."""

    demo = None
    draining: threading.Thread | None = None


def _shutdown_cleanly_on_sigterm(served: _Served, grace: float) -> None:
    """SIGTERM (docker stop, systemd, a Space restart) drains the server (faceanon.webapp.shutdown:
    jobs in flight finish or are stopped with a message) and then runs the same shutdown as Ctrl-C,
    so the temp folder is deleted; Python's default would end the process without any clean-up and
    leave every client without an answer. A second SIGTERM stops at once."""

    def drain_then_close():
        from faceanon.webapp.shutdown import JOBS

        log.info("SIGTERM: finishing the jobs in flight (at most %g s), then closing", grace)
        left = JOBS.drain(grace)
        if left:
            log.warning("closing with %d job(s) still running", left)
        served.demo.close()

    def stop(_signum, _frame):
        if served.demo is None or served.draining is not None:  # not serving yet, or asked twice
            raise KeyboardInterrupt
        served.draining = threading.Thread(target=drain_then_close, name="faceanon-drain", daemon=True)
        served.draining.start()

    with contextlib.suppress(ValueError):  # only possible in the main thread
        signal.signal(signal.SIGTERM, stop)


def _theme():
    import gradio as gr

    return gr.themes.Soft(primary_hue="indigo")
