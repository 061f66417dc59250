"""On/off switches read from the environment where a module reads one at call time (kernels' benchmark overrides,
the engine's async scheduling): one parser, strict, so a typo is an error naming the variable, never a silent pick."""

from __future__ import annotations

import os
from collections.abc import Mapping

ON = ("1", "on", "true", "yes")
OFF = ("0", "off", "false", "no")


class EnvSwitchError(ValueError):
    """A switch set to something other than on/off (a ValueError; the quant_matmul tuner, which skips a candidate that
    fails, re-raises it: a kernel module that reads a switch at import fails loudly, not as skipped candidates)."""


# every switch read through env_switch (a test keeps this list complete): the worker checks them all at start
# (config.load_config), so a typo stops it with the variable's name before it serves, not at the first step that
# happens to read it (some are read only when a kernel module is first imported or a kernel first launched)
SWITCHES = ("INLAID_ASYNC_ADMIT", "INLAID_ASYNC_SCHEDULING", "INLAID_DECODE_NORM", "INLAID_DECODE_ROW",
            "INLAID_DECODE_SKIP_EMPTY", "INLAID_DECODE_TCS_DEFER", "INLAID_DECODE_TILES_PREFETCH", "INLAID_GREEDY_KERNEL",
            "INLAID_PDL_LORA",
            "INLAID_PDL_TCG", "INLAID_PREFILL_GRAPHS", "INLAID_QMM_TC3", "INLAID_QMM_TUNED",
            "INLAID_TCG_BALANCE", "INLAID_TCSX_XP")  # fmt: skip


def env_switch(name: str, env: Mapping[str, str] | None = None) -> bool | None:
    """None when `name` is unset or empty; True for 1/on/true/yes, False for 0/off/false/no (any case); anything
    else is an EnvSwitchError (a ValueError) naming the variable. env: os.environ unless given."""
    raw = (os.environ if env is None else env).get(name, "").strip().lower()
    if not raw:
        return None
    if raw in ON:
        return True
    if raw in OFF:
        return False
    raise EnvSwitchError(f"{name} must be 1/on/true/yes or 0/off/false/no, got {raw!r}")


def env_int(name: str, default: int, what: str, env: Mapping[str, str] | None = None) -> int:
    """The integer `name` holds (surrounding spaces ignored), `default` when it is unset or empty; anything else is a
    ValueError naming the variable and what the integer counts (`what`, e.g. "tokens"). env: os.environ unless given."""
    raw = (os.environ if env is None else env).get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name} must be an integer ({what}), got {raw!r}") from None


def check_switches(env: Mapping[str, str] | None = None) -> None:
    """Raises EnvSwitchError for the first of SWITCHES set to something other than on/off."""
    for name in SWITCHES:
        env_switch(name, env)
