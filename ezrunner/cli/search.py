"""``ezrunner search``: find models on Hugging Face, ModelScope, local folders and caches;
``--info MODEL`` shows the details of one model."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="find models (Hugging Face, ModelScope, local folders and caches); --info for one model",
        description=(
            "Search Hugging Face (HF_ENDPOINT and HF_TOKEN are honoured), ModelScope "
            "(MODELSCOPE_ENDPOINT), local model folders and the local HF/ModelScope caches. Sources "
            "that cannot be reached fail fast with a one-line reason; local results still show. "
            "With --info MODEL, show one model's weights, format, size, architecture, parameters, "
            "dtype, context length, attention shape, MoE experts, gated status, remote code and revision."
        ),
    )
    p.add_argument("query", nargs="?", default="", help="text to search for, or a local folder")
    p.add_argument("--source", default="all", choices=["hf", "modelscope", "local", "all"], help="where to search (default: all)")
    p.add_argument("--limit", type=int, default=20, help="results per source (default 20)")
    p.add_argument("--info", metavar="MODEL", help="show the details of MODEL (hub id or folder) instead of searching")
    p.add_argument("--revision", help="with --info: a branch, tag or commit")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each remote source (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import json

    from ezrunner.core import discovery
    from ezrunner.core.errors import UsageError
    from ezrunner.core.hubs import HubConfig

    if args.timeout <= 0:
        raise UsageError(f"--timeout: must be more than 0, got {args.timeout}")
    cfg = HubConfig(timeout=args.timeout)
    if args.info:
        source = "auto" if args.source == "all" else args.source
        details = discovery.model_details(args.info, args.revision, source=source, cfg=cfg)
        if args.json:
            print(json.dumps(details.to_dict(), indent=2))
        else:
            print(format_details(details))
        return 0
    if not args.query and args.source != "local":
        raise UsageError("search: give a QUERY (or --source local to list local models)", hint="e.g. ezrunner search qwen2.5")
    outcome = discovery.search(args.query, [args.source], args.limit, cfg=cfg)
    if args.json:
        print(json.dumps(outcome.to_dict(), indent=2))
    else:
        print(format_outcome(outcome))
    return 0


def _params(n) -> str:
    if not n:
        return "-"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def format_outcome(outcome) -> str:
    from ezrunner.core.units import human_bytes

    lines = []
    if outcome.results:
        rows = [("source", "model", "params", "size", "downloads", "gated")]
        for r in outcome.results:
            rows.append((r.source, r.id, _params(r.parameters), human_bytes(r.size_bytes) if r.size_bytes else "-",
                         str(r.downloads) if r.downloads is not None else "-",
                         str(r.gated) if r.gated not in (None, False) else "-"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    else:
        lines.append("no models found")
    for source, reason in outcome.errors.items():
        lines.append(f"{source}: unavailable: {reason}")
    return "\n".join(lines)


def format_details(d) -> str:
    from ezrunner.core.units import human_bytes

    x = d.to_dict()
    rows = [
        ("model", x["model"]),
        ("source", x["source"] + (f" ({x['path']})" if x["path"] and x["path"] != x["model"] else "")),
        ("revision", x["revision"] or "-"),
        ("architecture", x["architecture"] or "-"),
        ("parameters", f"{x['parameters']:,} ({x['parameters_source']})" if x["parameters"] else "-"),
        ("dtype", x["dtype"] or "-"),
        ("context length", str(x["context_length"] or "-")),
        ("layers / heads / KV heads / head_dim",
         f"{x['num_hidden_layers']} / {x['num_attention_heads']} / {x['num_key_value_heads']} / {x['head_dim']}"),
        ("MoE experts", f"{x['num_experts']} (top {x['num_experts_per_tok']})" if x["num_experts"] else "-"),
        ("weights", f"{x['weight_format'] or 'none'}, {len(x['weight_files'])} file(s), {human_bytes(x['weights_total_bytes'])}"),
        ("gated", str(x["gated"]) if x["gated"] else "no"),
        ("trust_remote_code", "needed (auto_map)" if x["trust_remote_code"] else "no"),
    ]
    w = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(w)}  {v}" for k, v in rows]
    lines.extend(f"note: {n}" for n in x["notes"])
    return "\n".join(lines)
