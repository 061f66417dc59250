"""On/off switches read from the environment where a module reads one at call time (kernels' benchmark overrides,
the engine's async scheduling): one parser, strict, so a typo is an error naming the variable, never a silent pick."""

from __future__ import annotations

import os

ON = ("1", "on", "true", "yes")
OFF = ("0", "off", "false", "no")


class EnvSwitchError(ValueError):
    """A switch set to something other than on/off (a ValueError; the quant_matmul tuner, which skips a candidate that
    fails, re-raises it: a kernel module that reads a switch at import fails loudly, not as skipped candidates)."""


def env_switch(name: str) -> bool | None:
    """None when `name` is unset or empty; True for 1/on/true/yes, False for 0/off/false/no (any case); anything
    else is an EnvSwitchError (a ValueError) naming the variable."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return None
    if raw in ON:
        return True
    if raw in OFF:
        return False
    raise EnvSwitchError(f"{name} must be 1/on/true/yes or 0/off/false/no, got {raw!r}")
