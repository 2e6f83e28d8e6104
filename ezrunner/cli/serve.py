"""``ezrunner serve``: run the embedded OpenAI-compatible server on this host.

The same code runs inside the Transformers images (as ``ezrunner_server``);
here it is imported as ``ezrunner.images.server``. Heavy libraries (torch,
transformers, fastapi, uvicorn) load only when the command runs.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from ezrunner.images.server.cli import add_arguments

    p = sub.add_parser(
        "serve",
        help="serve a local model folder over an OpenAI-compatible HTTP API",
        description=(
            "Serve a local model folder (a causal LM for chat/completions, or an embedding model) "
            "with the same OpenAI-compatible server that runs inside ezrunner's Transformers images: "
            "continuous batching, /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings, "
            "/health, /ready and /metrics. Works offline (HF_HUB_OFFLINE=1)."
        ),
    )
    add_arguments(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ezrunner.core.errors import EzError, UsageError
    from ezrunner.images.server.cli import config_from_args, precheck, serve, setup_logging
    from ezrunner.images.server.config import LoadError

    try:
        config = config_from_args(args)
        precheck(config)
    except LoadError as exc:
        hint = None
        if "trust-remote-code" in str(exc):
            hint = "only add --trust-remote-code for a model whose code you have read"
        raise UsageError(str(exc), hint=hint) from None
    try:
        import fastapi  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise EzError(f"serving needs {exc.name}, which is not installed",
                      hint='pip install "ezrunner[serve]"') from None
    setup_logging()
    status = serve(config)
    if status:
        raise EzError("the server stopped because the model could not be served (see the log above)")
    return 0
