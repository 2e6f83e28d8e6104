"""What every hub shares: the model reference, the endpoint settings, the result
types, and the :class:`Hub` protocol that ``hf.py``, ``modelscope.py`` and
``local.py`` implement.

No hub library is imported here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from ezrunner.core import events as ev
from ezrunner.core import modelinfo
from ezrunner.core.errors import UsageError
from ezrunner.core.modelinfo import ModelConfig, WeightFile

Source = Literal["hf", "modelscope", "local"]
SOURCES: tuple[Source, ...] = ("hf", "modelscope", "local")
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
MS_DEFAULT_ENDPOINT = "https://modelscope.cn"
DEFAULT_TIMEOUT = 10.0  # seconds, per remote source

# --------------------------------------------------------------------- validation

# huggingface_hub's own rule (utils/_validators.py: REPO_ID_REGEX and the checks after it).
_HF_REPO_ID = re.compile(r"^(\b[\w\-.]+\b/)?\b[\w\-.]{1,96}\b$", re.ASCII)
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,127}$")


def validate_repo_id(repo_id: str) -> str:
    """Accept only ids that match the hub's own pattern; everything else (newlines,
    ``$(...)``, quotes, ``;``, spaces, ``..``) is a UsageError."""
    if not isinstance(repo_id, str) or not _HF_REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id or repo_id.endswith(".git"):
        raise UsageError(
            f"not a valid model id: {repo_id!r}",
            hint="use owner/name as on the hub (letters, digits, '-', '_', '.'), or a local folder",
        )
    return repo_id


def validate_revision(revision: str | None) -> str | None:
    if revision is None:
        return None
    if not _REVISION.match(revision) or ".." in revision or "//" in revision:
        raise UsageError(f"--revision: not a valid revision: {revision!r}", hint="a branch, a tag or a 40-hex commit")
    return revision


# ------------------------------------------------------------------ the reference

@dataclass(frozen=True)
class ModelRef:
    """A model: a hub id on ``hf`` or ``modelscope``, or a folder (``local``, the
    absolute path). Validated on construction; carried from search to pack."""

    source: Source
    id: str
    revision: str | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise UsageError(f"--source: unknown source {self.source!r}", hint="choose hf, modelscope or local")
        if self.source == "local":
            if not self.id:
                raise UsageError("no model given", hint="give a hub id such as Qwen/Qwen2.5-0.5B-Instruct or a folder path")
        else:
            validate_repo_id(self.id)
        validate_revision(self.revision)

    def __str__(self) -> str:
        return self.id

    @property
    def text(self) -> str:
        """The form ``parse_model_ref`` reads back (``modelscope:`` prefix for ModelScope)."""
        return f"modelscope:{self.id}" if self.source == "modelscope" else self.id


@dataclass(frozen=True)
class HubConfig:
    """Endpoints, token and timeout. What is not given is read from the environment
    (``HF_ENDPOINT``, ``HF_TOKEN``, ``MODELSCOPE_ENDPOINT``) at call time, so
    mirrors work even when the hub libraries were imported earlier."""

    hf_endpoint: str | None = None
    ms_endpoint: str | None = None
    token: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    def hf_url(self) -> str:
        return (self.hf_endpoint or os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")

    def hf_token(self) -> str | None:
        return self.token or os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None

    def ms_url(self) -> str:
        ep = (self.ms_endpoint or os.environ.get("MODELSCOPE_ENDPOINT") or os.environ.get("MODELSCOPE_DOMAIN")
              or MS_DEFAULT_ENDPOINT)
        if not ep.startswith("http"):
            ep = "https://" + ep
        return ep.rstrip("/")


@dataclass(frozen=True)
class FetchedModel:
    """A model on this machine: its folder and its reference, the revision resolved
    (the commit a hub download was pinned to)."""

    folder: Path
    ref: ModelRef

    @property
    def label_id(self) -> str:
        """The model id the bundle labels carry: the hub id, or the folder's name."""
        return self.folder.name if self.ref.source == "local" else self.ref.id


# ----------------------------------------------------------------------- results

@dataclass
class SearchResult:
    id: str  # hub id, or the absolute folder for local results
    source: str  # hf | modelscope | local | hf-cache | modelscope-cache
    downloads: int | None = None
    likes: int | None = None
    parameters: int | None = None
    gated: str | bool | None = None
    size_bytes: int | None = None
    path: str | None = None  # the local folder, when there is one
    last_modified: str | None = None
    pipeline_tag: str | None = None

    @property
    def ref(self) -> ModelRef:
        """What picking this result means: its folder when it has one (local folders,
        the caches), else the hub id on its hub."""
        if self.path:
            return ModelRef("local", self.path)
        return ModelRef("modelscope" if self.source == "modelscope" else "hf", self.id)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ModelDetails:
    model: str  # hub id, or the absolute folder
    source: str  # hf | modelscope | local | hf-cache | modelscope-cache
    path: str | None = None  # local folder holding the files, when at hand
    revision: str | None = None  # commit sha that would be packed
    files: list[WeightFile] = field(default_factory=list)  # every weight file seen
    config: ModelConfig | None = None
    parameters: int | None = None
    parameters_source: str | None = None  # safetensors-headers | hub-metadata | transformers-meta | config-estimate
    parameters_exact: bool = False
    parameters_by_dtype: dict[str, int] = field(default_factory=dict)  # safetensors dtype code -> count
    gated: str | bool | None = None
    downloads: int | None = None
    likes: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def weight_format(self) -> str | None:
        return modelinfo.primary_format(self.files)

    @property
    def weight_files(self) -> list[WeightFile]:
        return modelinfo.loadable_weights(self.files)

    @property
    def weights_total_bytes(self) -> int | None:
        sizes = [f.size for f in self.weight_files]
        if not sizes or any(s is None for s in sizes):
            return None
        return int(sum(s for s in sizes if s is not None))

    @property
    def trust_remote_code(self) -> bool:
        return bool(self.config and self.config.trust_remote_code)

    @property
    def dtype(self) -> str | None:
        if self.config and self.config.dtype:
            return self.config.dtype
        if self.parameters_by_dtype:
            code = max(self.parameters_by_dtype, key=lambda k: self.parameters_by_dtype[k])
            return modelinfo.SAFETENSORS_DTYPES.get(code.upper(), (code.lower(), 0))[0]
        return None

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        return {
            "model": self.model,
            "source": self.source,
            "path": self.path,
            "revision": self.revision,
            "weight_format": self.weight_format,
            "weight_files": [{"path": f.path, "size": f.size, "format": f.format} for f in self.weight_files],
            "other_weight_files": [f.path for f in self.files if f not in self.weight_files],
            "weights_total_bytes": self.weights_total_bytes,
            "architecture": c.architecture if c else None,
            "model_type": c.model_type if c else None,
            "parameters": self.parameters,
            "parameters_source": self.parameters_source,
            "parameters_exact": self.parameters_exact,
            "parameters_by_dtype": dict(self.parameters_by_dtype),
            "dtype": self.dtype,
            "context_length": c.max_position_embeddings if c else None,
            "num_hidden_layers": c.num_hidden_layers if c else None,
            "hidden_size": c.hidden_size if c else None,
            "num_attention_heads": c.num_attention_heads if c else None,
            "num_key_value_heads": c.num_key_value_heads if c else None,
            "head_dim": c.head_dim if c else None,
            "vocab_size": c.vocab_size if c else None,
            "num_experts": c.num_experts if c else None,
            "num_experts_per_tok": c.num_experts_per_tok if c else None,
            "quantization": c.quantization if c else None,
            "gated": self.gated,
            "trust_remote_code": self.trust_remote_code,
            "auto_map": c.auto_map if c else None,
            "downloads": self.downloads,
            "likes": self.likes,
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------- protocol

Check = Callable[[], None]
Download = Generator[ev.Event, None, FetchedModel]


class Hub(Protocol):
    """One place models come from."""

    source: Source

    def search(self, query: str, limit: int, cfg: HubConfig) -> list[SearchResult]:
        """Models matching ``query``; raises (a one-line reason) when unreachable."""
        ...

    def details(self, ref: ModelRef, cfg: HubConfig) -> ModelDetails:
        """The details of one model (the local cache when the hub is unreachable)."""
        ...

    def download(self, ref: ModelRef, cfg: HubConfig, check: Check) -> Download:
        """``fetched = yield from hub.download(...)``: progress events, then the folder."""
        ...

    def cached(self) -> list[SearchResult]:
        """The models of this hub already on this machine."""
        ...
