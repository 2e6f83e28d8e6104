"""The output folder: a Kustomize base, two autoscaling overlays, LOAD.md and the load
script, as ``{relative path: text}``; then one atomic write per file.

    DIR/base/{kustomization,deployment,service,networkpolicy[,pdb]}.yaml
    DIR/overlays/hpa/{kustomization,hpa}.yaml
    DIR/overlays/keda/{kustomization,scaledobject}.yaml
    DIR/LOAD.md, DIR/load-image.sh

Every string value is written double-quoted (no value from a label or a flag is
ever read back as a number, a boolean or YAML syntax).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from ezrunner.core.fsutil import atomic_write_text
from ezrunner.core.k8s import manifests as m
from ezrunner.core.k8s.load import LOAD_DOC, SCRIPT_NAME, LoadFacts, load_doc, load_script
from ezrunner.core.k8s.workload import Workload

KUSTOMIZATION = "kustomization.yaml"
HEADER = "# Written by `ezrunner k8s` from the bundle's labels and plan; edit through overlays.\n"


class _Quoted(str):
    pass


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


_Dumper.add_representer(_Quoted, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", str(s), style='"'))


def _quoted(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _quoted(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_quoted(v) for v in obj]
    return _Quoted(obj) if isinstance(obj, str) else obj


def to_yaml(obj: dict[str, Any]) -> str:
    """One object as YAML: keys in build order, every string value double-quoted."""
    return HEADER + yaml.dump(_quoted(obj), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def kustomization(resources: list[str], *, namespace: str | None = None) -> dict[str, Any]:
    k: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
    if namespace:
        k["namespace"] = namespace
    k["resources"] = resources
    return k


def base_objects(w: Workload) -> dict[str, dict[str, Any]]:
    objs = {"deployment.yaml": m.deployment(w), "service.yaml": m.service(w),
            "networkpolicy.yaml": m.network_policy(w)}
    if w.options.replicas >= 2:
        objs["pdb.yaml"] = m.disruption_budget(w)
    return objs


def overlay(name: str, obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"overlays/{name}/{KUSTOMIZATION}": kustomization(["../../base", f"{name_of(obj)}.yaml"]),
            f"overlays/{name}/{name_of(obj)}.yaml": obj}


def name_of(obj: dict[str, Any]) -> str:
    return {"HorizontalPodAutoscaler": "hpa", "ScaledObject": "scaledobject"}[obj["kind"]]


def manifest_files(w: Workload) -> dict[str, dict[str, Any]]:
    """Every YAML file (relative path -> object), kustomizations included."""
    base = base_objects(w)
    files = {f"base/{KUSTOMIZATION}": kustomization(list(base), namespace=w.options.namespace)}
    files.update({f"base/{k}": v for k, v in base.items()})
    files.update(overlay("hpa", m.hpa(w)))
    files.update(overlay("keda", m.scaled_object(w)))
    return files


def render(w: Workload, facts: LoadFacts) -> dict[str, str]:
    """The whole folder as text: the YAML files, LOAD.md and the load script."""
    out = {path: to_yaml(obj) for path, obj in manifest_files(w).items()}
    out[LOAD_DOC] = load_doc(facts)
    out[SCRIPT_NAME] = load_script(facts)
    return out


def write(files: dict[str, str], out_dir: Path) -> list[Path]:
    """Write every file atomically under ``out_dir``; the script is executable."""
    written = []
    for rel, text in files.items():
        path = out_dir / rel
        atomic_write_text(path, text)
        if rel == SCRIPT_NAME:
            os.chmod(path, 0o755)
        written.append(path)
    return written
