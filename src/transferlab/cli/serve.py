"""`transferlab serve`."""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer

from transferlab.cli._common import Debug, Quiet, app, err, guard, setup_logging
from transferlab.cli.predict import BackendOption, ModelArgument, RejectBelowOption, TtaOption

SERVE_EXAMPLES = """
[bold]Examples[/bold]

  transferlab serve runs/demo
  transferlab serve runs/demo --backend onnx --port 8080
  transferlab serve model.onnx --max-batch 8 --batch-window-ms 5
  transferlab serve runs/demo --reject-below 0.6
  curl -F file=@examples/samples/capitol-dome.jpg 'http://127.0.0.1:8000/predict?top_k=3'
  curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:8000/predict

Open http://127.0.0.1:8000/ for the upload page and /docs for the API. The server binds
to 127.0.0.1; --host 0.0.0.0 exposes it to the network, without authentication.
"""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command(epilog=SERVE_EXAMPLES)
def serve(
    model: ModelArgument,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    backend: BackendOption = None,
    tta: TtaOption = "none",
    top_k: Annotated[int, typer.Option("--top-k", help="Classes returned by default.")] = 5,
    reject_below: RejectBelowOption = None,
    max_upload_mb: Annotated[
        float, typer.Option(help="Largest accepted upload; larger ones get 413.")
    ] = 10.0,
    max_pixels: Annotated[
        float, typer.Option(help="Largest image in megapixels (decompression-bomb guard).")
    ] = 40.0,
    max_batch: Annotated[
        int, typer.Option(help="Classify up to this many waiting requests at once (1: off).")
    ] = 1,
    batch_window_ms: Annotated[
        float, typer.Option(help="With --max-batch > 1: how long a request waits for others.")
    ] = 2.0,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for inference (default: the runtime's).")
    ] = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Serve a model over HTTP: an upload page at /, POST /predict, GET /model, /health, /docs."""
    setup_logging(quiet, debug)
    with guard(debug):
        from transferlab.backends import load_backend
        from transferlab.calibration import check_reject_below
        from transferlab.errors import ConfigError
        from transferlab.serve import ServeConfig, create_app
        from transferlab.tta import check_mode

        check_mode(tta)
        check_reject_below(reject_below)
        if max_upload_mb <= 0 or max_pixels <= 0:
            raise ConfigError("--max-upload-mb and --max-pixels must be positive")
        if max_batch < 1 or batch_window_ms < 0 or top_k < 1:
            raise ConfigError("--max-batch and --top-k must be >= 1, --batch-window-ms >= 0")
        if not 0 <= port <= 65535:
            raise ConfigError(f"--port {port} is not a TCP port (0-65535)")
        if threads is not None and threads < 1:
            raise ConfigError(f"--threads {threads}: give at least 1, or leave it out")
        runner = load_backend(model, backend, threads)
        config = ServeConfig(
            max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            max_pixels=int(max_pixels * 1_000_000),
            top_k=top_k,
            tta=tta,
            max_batch=max_batch,
            batch_window_ms=batch_window_ms,
            reject_below=reject_below,
        )
        application = create_app(runner, config)
        if not _is_loopback(host):
            err.print(
                f"warning: binding {host} exposes the model to the network without authentication",
                highlight=False,
            )
        if not quiet:
            err.print(
                f"serving {runner.architecture} ({runner.name}, {len(runner.class_names)} classes) "
                f"on http://{host}:{port}/ ; API docs at /docs",
                highlight=False,
                soft_wrap=True,
            )
        import uvicorn

        uvicorn.run(
            application,
            host=host,
            port=port,
            log_level="debug" if debug else "warning" if quiet else "info",
            access_log=not quiet,
        )
