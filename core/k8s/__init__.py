"""``ezrunner k8s``: Kustomize manifests for a bundle, for air-gapped Kubernetes clusters.

Derived only from the bundle's ``ezrunner-bundle.json``, its image labels and plan,
so the manifests match the image exactly. UI-free; nothing heavy is imported.

- :mod:`.options`: :class:`K8sOptions`, the operator's choices, checked;
- :mod:`.workload`: :class:`Workload`, the pod's figures (probes, resources, security);
- :mod:`.manifests`: the objects as plain dicts;
- :mod:`.layout`: the folder (base + overlays), YAML, atomic writes;
- :mod:`.load`: ``LOAD.md`` and ``load-image.sh``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ezrunner.core.bundle.reader import BundleInfo, BundleSource, find_bundle, inspect_bundle
from ezrunner.core.errors import EzError
from ezrunner.core.k8s import layout
from ezrunner.core.k8s.load import LoadFacts
from ezrunner.core.k8s.options import K8sOptions
from ezrunner.core.k8s.workload import Workload, workload

__all__ = ["K8sOptions", "K8sResult", "Workload", "export_k8s", "render_bundle"]


@dataclass(frozen=True)
class K8sResult:
    out_dir: Path
    files: tuple[Path, ...]
    workload: Workload


def render_bundle(info: BundleInfo, source: BundleSource, options: K8sOptions) -> tuple[Workload, dict[str, str]]:
    """The folder's files as text, for an inspected bundle."""
    if info.labels is None:
        raise EzError(f"{source.describe()} has an image without ezrunner labels",
                      hint="render manifests for bundles written by `ezrunner pack`")
    w = workload(info.manifest, info.labels, options.checked())
    facts = LoadFacts(bundle=source.path.name, parts=len(source.parts), image=info.image_tag,
                      registry=options.registry, secret=w.secret, namespace=options.namespace)
    return w, layout.render(w, facts)


def export_k8s(bundle: str | os.PathLike[str], out_dir: str | os.PathLike[str],
               options: K8sOptions | None = None) -> K8sResult:
    """Check the bundle's structure (not its checksum), then write the folder."""
    source = find_bundle(bundle)
    w, files = render_bundle(inspect_bundle(source), source, options or K8sOptions())
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EzError(f"-o {out}: not a folder")
    return K8sResult(out, tuple(layout.write(files, out)), w)
