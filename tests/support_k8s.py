"""Bundles for the ``ezrunner k8s`` tests: the three plans of issue 17 as BundleInfo
(no tar needed), and a synthetic bundle tar with real labels for the CLI."""

from __future__ import annotations

from pathlib import Path

from ezrunner.core.bundle.format import BundleLabels, BundleManifest, DockerManifest
from ezrunner.core.bundle.reader import BundleInfo, BundleSource
from ezrunner.core.engines import ServeRequest, get_spec
from support_run import make_synthetic_bundle

GIB = 1024**3

PLANS: dict[str, dict] = {
    "transformers-cpu": {"engine": "transformers", "device": "cpu", "model_bytes": 1_000_000_000, "plan": {
        "weights_bytes": 1_000_000_000, "reserve_bytes": GIB, "kv_bytes_per_token": 65536, "max_model_len": 4096,
        "max_concurrent_sequences": 4, "kv_cache_bytes": 8 * GIB, "tensor_parallel_size": 1}},
    "transformers-cuda": {"engine": "transformers", "device": "cuda", "model_bytes": 16_000_000_000, "plan": {
        "weights_bytes": 16_000_000_000, "max_model_len": 8192, "max_concurrent_sequences": 8,
        "tensor_parallel_size": 1}},
    "vllm-tp2": {"engine": "vllm", "device": "cuda", "model_bytes": 64_000_000_000, "plan": {
        "weights_bytes": 64_000_000_000, "max_model_len": 32768, "max_concurrent_sequences": 64,
        "tensor_parallel_size": 2, "gpu_memory_utilization": 0.9, "dtype": "bfloat16"}},
}


def labels_for(case: str, served: str = "model-x") -> tuple[BundleManifest, BundleLabels]:
    c = PLANS[case]
    spec = get_spec(c["engine"], c["device"])
    plan = {"engine": c["engine"], "device": c["device"], **c["plan"]}
    manifest = BundleManifest(model=f"org/{served}", served_model_name=served, engine=c["engine"], device=c["device"],
                              image_id="sha256:" + "0" * 64, image_tag=f"ezrunner/{served}:{spec.key}-0123456789ab",
                              model_bytes=c["model_bytes"], plan=plan, created="2026-01-01T00:00:00Z")
    return manifest, BundleLabels.for_bundle(manifest, spec, spec.serve_argv(ServeRequest(served, plan)))


def bundle_info(case: str, served: str = "model-x") -> tuple[BundleInfo, BundleSource]:
    manifest, labels = labels_for(case, served)
    info = BundleInfo(manifest=manifest, docker_manifest=DockerManifest(config="c.json", layers=()), labels=labels)
    path = Path(f"/bundles/{served}.tar")
    return info, BundleSource(path, (path,), (1,))


def synthetic_bundle_for(case: str, dest: Path, served: str = "model-x") -> Path:
    """A bundle tar (not loadable) whose image config carries the case's labels."""
    manifest, labels = labels_for(case, served)
    overrides = {"served_model_name": served, "model": manifest.model, "engine": manifest.engine,
                 "device": manifest.device, "model_bytes": manifest.model_bytes, "plan": manifest.plan,
                 "image_tag": manifest.image_tag}
    return make_synthetic_bundle(dest, labels=labels.to_labels(), manifest_overrides=overrides)
