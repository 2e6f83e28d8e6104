"""``ezrunner plan``: which engine, device, dtype, context and concurrency a model gets on a target."""

from __future__ import annotations

import argparse

from ezrunner.cli._target import add_target_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="plan memory, engine, dtype and context for MODEL on a target",
        description=(
            "Size MODEL (hub id or local folder) for the target: weights, KV cache per token (vLLM's "
            "formula), the GPU budget, then the engine (vLLM or Transformers), device, dtype, "
            "max_model_len, concurrency and tensor-parallel size, with reasons and warnings."
        ),
    )
    p.add_argument("model", help="hub id (OWNER/NAME) or a local model folder")
    add_target_arguments(p)
    p.add_argument("--max-model-len", type=int, metavar="N", help="context length to plan for (default: the model's)")
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"], help="weights dtype (default auto)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9, metavar="F", help="fraction of GPU memory to use (default 0.9)")
    p.add_argument("--kv-cache-dtype", default="auto", choices=["auto", "fp8"], help="KV cache dtype (fp8 halves a 16-bit cache; default auto)")
    p.add_argument("--engine", default="auto", choices=["auto", "vllm", "transformers"], help="force an engine (default auto)")
    p.add_argument("--revision", help="a branch, tag or commit of a hub model")
    p.add_argument("--source", default="auto", choices=["auto", "hf", "modelscope", "local"], help="where MODEL lives (default: folder if it exists, else Hugging Face)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import json

    from ezrunner.cli._target import profile_from_args
    from ezrunner.core import discovery
    from ezrunner.core.plan import PlanOptions, make_plan

    profile = profile_from_args(args)
    details = discovery.model_details(args.model, args.revision, source=args.source)
    options = PlanOptions(max_model_len=args.max_model_len, dtype=args.dtype,
                          gpu_memory_utilization=args.gpu_memory_utilization, engine=args.engine,
                          kv_cache_dtype=args.kv_cache_dtype)
    plan = make_plan(details, profile, options)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        print_plan(plan)
    return 0 if plan.fits else 1


def plan_renderable(plan):
    """The plan as a rich renderable: the table, then reasons, notes and warnings."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from ezrunner.core.plan import plan_rows, plan_sections

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for k, v in plan_rows(plan):
        style = "red bold" if (k == "fits" and v == "NO") else None
        table.add_row(k, Text(v, style=style or ""))
    parts = [table]
    for heading, lines in plan_sections(plan):
        warn = heading == "warnings:"
        parts.append(Text("\nwhy:" if heading == "why:" else heading, style="bold yellow" if warn else "bold"))
        parts.extend(Text(line, style="yellow") if warn else Text(line) for line in lines)
    return Group(*parts)


def print_plan(plan) -> None:
    import sys

    if not sys.stdout.isatty():
        from ezrunner.core.plan import format_plan_text

        print(format_plan_text(plan))
        return
    from rich.console import Console

    Console().print(plan_renderable(plan))
