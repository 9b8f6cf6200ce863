"""Schedulers selectable by name, all built from SD 2.1's scheduler config.

| name          | class                          | meant for                                   |
|---------------|--------------------------------|---------------------------------------------|
| "ddpm"        | DDPMScheduler (the reference)  | 25 steps for photos, 200 as in the paper    |
| "ddim"        | DDIMScheduler, trailing spacing| 20-50 steps                                 |
| "dpmsolver++" | DPMSolverMultistepScheduler 2M | 15-25 steps                                 |
| "unipc"       | UniPCMultistepScheduler        | 10-20 steps                                 |
"""

from __future__ import annotations

from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

from faceanon.configs import SCHEDULER_CONFIG

SCHEDULERS = {
    "ddpm": (DDPMScheduler, {}),
    "ddim": (DDIMScheduler, {"timestep_spacing": "trailing"}),
    "dpmsolver++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "unipc": (UniPCMultistepScheduler, {}),
}
DEFAULT_SCHEDULER = "ddpm"


def make_scheduler(name: str = DEFAULT_SCHEDULER, base_config: dict | None = None):
    """A scheduler by name (see the table above), from SD 2.1's config or ``base_config``."""
    key = name.lower().replace("_", "").replace("-", "") if name else DEFAULT_SCHEDULER
    aliases = {
        "dpmsolver": "dpmsolver++",
        "dpmsolver++": "dpmsolver++",
        "dpm++": "dpmsolver++",
        "dpmpp": "dpmsolver++",
    }
    key = aliases.get(key, key)
    if key not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}.")
    cls, overrides = SCHEDULERS[key]
    config = dict(base_config or SCHEDULER_CONFIG)
    config.update(overrides)
    return cls.from_config(config)
