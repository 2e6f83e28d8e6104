"""What the operator entered in the wizard, kept across steps (Esc goes back
and finds it again)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ezrunner.core.hubs import ModelRef

SOURCES = ("hf", "modelscope", "local")


@dataclass
class WizardState:
    # 1. search
    query: str = ""
    sources: set[str] = field(default_factory=lambda: set(SOURCES))
    results: list[dict[str, Any]] = field(default_factory=list)
    hub_notice_shown: bool = False
    model: ModelRef | None = None  # what was picked: search, details, plan and pack take it
    details: dict[str, Any] | None = None  # as shown
    details_obj: Any = None  # the core ModelDetails the plan and pack use
    # 2. hardware
    hardware_mode: str = "probe"  # probe | preset | manual | file
    preset: str | None = None
    gpu_count: str = "1"
    gpu_memory: str = ""
    compute_capability: str = ""
    ram: str = ""
    cpu_only: bool = False
    profile_path: str = ""
    probe: dict[str, Any] | None = None  # this machine's probe, as shown
    probe_profile: Any = None  # the same, as the core HardwareProfile
    profile: Any = None  # the core HardwareProfile the plan is made for
    for_this_machine: bool = True
    # 3. review
    max_model_len: str = ""
    dtype: str = "auto"
    engine: str = "auto"
    output: str = ""
    split_size: str = ""
    plan: dict[str, Any] | None = None  # Plan.to_dict()
    plan_rows: list[tuple[str, str]] | None = None  # core.plan.plan_rows(plan)
    base_image: str = ""
    no_fit_confirmed: bool = False
    # 4/5. build and done
    result: dict[str, Any] | None = None
