"""``ezrunner k8s BUNDLE -o DIR``: Kustomize manifests and load routes for an air-gapped cluster."""

from __future__ import annotations

import argparse
from dataclasses import fields

from ezrunner.core.k8s.options import DEFAULT_PROMETHEUS, STRATEGIES, K8sOptions

_D = K8sOptions()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "k8s",
        help="write Kustomize manifests (and how to load the image) for a Kubernetes cluster",
        description=(
            "Write a Kustomize base (Deployment, Service, NetworkPolicy, PodDisruptionBudget from 2 "
            "replicas), HPA and KEDA overlays, LOAD.md and load-image.sh for BUNDLE, derived only from "
            "its labels and plan. Nothing is contacted: apply with `kubectl apply -k DIR/base`."
        ),
    )
    p.add_argument("bundle", metavar="BUNDLE", help="BUNDLE.tar, or its first part BUNDLE.tar.part-001")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="the folder to write (created if missing)")
    p.add_argument("--name", help="the app's name (default: from the served model name)")
    p.add_argument("--namespace", help="the namespace (default: kubectl's)")
    p.add_argument("--replicas", type=int, default=_D.replicas, help=f"replicas (default {_D.replicas}; a PDB from 2)")
    p.add_argument("--strategy", choices=STRATEGIES, default=_D.strategy,
                   help="rolling (maxUnavailable 0: needs room for one more pod) or recreate (default rolling)")
    p.add_argument("--runtime-class", help="runtimeClassName for the pod, e.g. nvidia")
    p.add_argument("--api-key-secret", metavar="SECRET", help="the Secret holding the API key (default NAME-api-key)")
    p.add_argument("--no-api-key", dest="api_key", action="store_false",
                   help="no API key: anyone who reaches the Service may use the model")
    p.add_argument("--registry", help="the site registry the image was copied into (skopeo route)")
    p.add_argument("--cpu", help="CPU request (default 4 on CPU, 2 + 2 per GPU)")
    p.add_argument("--memory", help="memory request and limit, e.g. 32Gi (default from the plan)")
    p.add_argument("--max-replicas", type=int, default=_D.max_replicas, help="autoscaling ceiling (default 4)")
    p.add_argument("--hpa-cpu-percent", type=int, default=_D.hpa_cpu_percent, help="HPA CPU target (default 80)")
    p.add_argument("--keda-threshold", type=int, default=_D.keda_threshold,
                   help="KEDA: waiting requests per replica (default 5)")
    p.add_argument("--prometheus-url", default=DEFAULT_PROMETHEUS, help=f"KEDA's Prometheus (default {DEFAULT_PROMETHEUS})")
    p.add_argument("--pre-stop", dest="pre_stop_s", type=int, default=_D.pre_stop_s, metavar="SECONDS",
                   help="preStop delay before SIGTERM (default 15)")
    p.add_argument("--drain", dest="drain_s", type=int, default=_D.drain_s, metavar="SECONDS",
                   help="the server's drain after SIGTERM (default 45)")
    p.set_defaults(func=_run)


def options_from_args(args: argparse.Namespace) -> K8sOptions:
    return K8sOptions(**{f.name: getattr(args, f.name) for f in fields(K8sOptions)})


def _run(args: argparse.Namespace) -> int:
    from ezrunner.core.k8s import export_k8s

    result = export_k8s(args.bundle, args.output, options_from_args(args))
    w = result.workload
    for path in result.files:
        print(path)
    print(f"\n{w.name}: {w.image}, {w.resources.gpus or 'no'} GPU(s), startup allowed "
          f"{w.startup_failures * 10} s; load the image with {result.out_dir / 'load-image.sh'} (see LOAD.md),")
    if w.secret:
        print(f"create the Secret {w.secret} (key api-key), then: kubectl apply -k {result.out_dir / 'base'}")
    else:
        print(f"then: kubectl apply -k {result.out_dir / 'base'}")
    return 0
