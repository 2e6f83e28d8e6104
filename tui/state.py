"""What the operator entered in the wizard, kept across steps (Esc goes back
and finds it again). Results are the core's typed objects, as the core returned
them; the screens read their attributes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ezrunner.core.hardware import HardwareProfile
    from ezrunner.core.hubs import ModelDetails, ModelRef, SearchResult
    from ezrunner.core.pack import PackOptions, PackResult
    from ezrunner.core.plan import Plan

SOURCES = ("hf", "modelscope", "local")


@dataclass
class WizardState:
    # 1. search
    query: str = ""
    sources: set[str] = field(default_factory=lambda: set(SOURCES))
    results: list[SearchResult] = field(default_factory=list)
    # the weight format of results whose details were read (the search API does not say it)
    weight_formats: dict[ModelRef, str] = field(default_factory=dict)
    hub_notice_shown: bool = False
    model: ModelRef | None = None  # what was picked: search, details, plan and pack take it
    details: ModelDetails | None = None  # the picked model's details: shown, planned and packed
    # 2. hardware
    hardware_mode: str = "probe"  # probe | preset | manual | file
    preset: str | None = None
    gpu_count: str = "1"
    gpu_memory: str = ""
    compute_capability: str = ""
    ram: str = ""
    cpu_only: bool = False
    profile_path: str = ""
    probe: HardwareProfile | None = None  # this machine's probe
    profile: HardwareProfile | None = None  # the target the plan is made for
    for_this_machine: bool = True
    # 3. review
    max_model_len: str = ""
    dtype: str = "auto"
    engine: str = "auto"
    output: str = ""
    split_size: str = ""
    plan: Plan | None = None
    base_image: str = ""
    no_fit_confirmed: bool = False
    # 4/5. build and done
    result: PackResult | None = None

    def pack_options(self) -> PackOptions:
        """The core ``PackOptions`` of the wizard's choices (a no-fit plan was
        confirmed in the review modal, hence ``yes``)."""
        from ezrunner.core.pack import PackOptions

        return PackOptions(
            model=self.model,
            output=self.output,
            plan=self.plan,
            profile=self.profile,
            engine=None if self.engine == "auto" else self.engine,
            dtype=None if self.dtype == "auto" else self.dtype,
            max_model_len=int(self.max_model_len) if self.max_model_len.strip() else None,
            split_size=self.split_size.strip() or None,
            details=self.details,
            base_image=self.base_image or None,
            yes=True,
        )
