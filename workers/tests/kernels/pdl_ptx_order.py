"""Offline sm_90 PTX check of a PDL-aware kernel (kernels.pdl's rules), for test_pdl_ptx_order.py.

`analyze(ptx)` splits the kernel's PTX into basic blocks, finds on which of them every path from the entry has
passed a `griddepcontrol.wait` (forward must-dataflow), and lists the global memory operations that may run before
it: loads and cp.async (with the kernel parameters their addresses derive from: a flow-insensitive taint from
`ld.param` through every register-writing instruction, loaded values included) and stores / atomics / reductions
(never allowed). It also says whether some path reaches `ret` without a wait."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_REG = re.compile(r"%[a-z]+\d+")
_PARAM = re.compile(r"\[\w+_param_(\d+)\]")
_LABEL = re.compile(r"^(\$?[\w$]+):")
_BRA = re.compile(r"^(@!?%p\d+\s+)?bra(\.uni)?\s+(\$?[\w$]+)")
_MEM = re.compile(r"^(ld(\.volatile|\.relaxed|\.acquire)?(\.\w+)*\.global|st(\.\w+)*\.global|atom\.|red\.|"
                  r"cp\.async\.(ca|cg|bulk)\S*global)")  # fmt: skip
_WRITES = ("st", "atom", "red")
_NO_DEST = ("st.", "red.", "bra", "ret", "griddepcontrol", "bar", "cp.async", "membar", "fence", "exit")


@dataclass
class Report:
    waits: int
    launches: int
    ret_unwaited: bool  # some path reaches ret without passing a wait
    early_loads: list[tuple[str, set[int]]] = field(default_factory=list)  # (instruction, parameter indices)
    early_writes: list[str] = field(default_factory=list)


def _instructions(ptx: str) -> list[str]:
    out, inside = [], False
    for raw in ptx.splitlines():
        line = raw.strip() if "griddepcontrol" in raw else raw.split("//")[0].strip()
        if line.startswith((".visible .entry", ".entry")):
            inside = True
        if not inside or not line or line.startswith(".") or line in ("{", "}", "(", ")"):
            continue
        out += [p.strip() for p in line.split(";") if p.strip()]
    return out


def _core(ins: str) -> str:
    """The instruction without its guard predicate."""
    return ins.split(None, 1)[1] if ins.startswith("@") and " " in ins else ins


def _taint(ins: list[str]) -> dict[str, set[int]]:
    taint: dict[str, set[int]] = {}
    changed = True
    while changed:
        changed = False
        for s in ins:
            core = _core(s)
            if core.startswith(_NO_DEST) or _LABEL.match(core):
                continue
            operands = core.split(None, 1)[1] if " " in core else ""
            if operands.startswith("{"):  # vector destination
                dst_part, src_part = operands.split("}", 1)
                dsts, srcs = _REG.findall(dst_part), _REG.findall(src_part)
            else:
                regs = _REG.findall(operands)
                dsts, srcs = regs[:1], regs[1:]
            t = {int(m) for m in _PARAM.findall(core)}
            for r in srcs:
                t |= taint.get(r, set())
            for d in dsts:
                old = taint.setdefault(d, set())
                if not t <= old:
                    old |= t
                    changed = True
    return taint


def analyze(ptx: str) -> Report:
    ins = _instructions(ptx)
    taint = _taint(ins)
    blocks: list[list[str]] = [[]]
    names: dict[str, int] = {}
    for s in ins:
        lm = _LABEL.match(s)
        if lm:
            if blocks[-1]:
                blocks.append([])
            names[lm.group(1)] = len(blocks) - 1
            continue
        blocks[-1].append(s)
        if _core(s).startswith(("bra", "ret", "exit")):
            blocks.append([])
    succ: list[list[int]] = []
    for i, b in enumerate(blocks):
        last = b[-1] if b else ""
        bm = _BRA.match(last)
        if bm:
            nxt = [names[bm.group(3)]] + ([i + 1] if bm.group(1) else [])
        elif _core(last).startswith(("ret", "exit")):
            nxt = []
        else:
            nxt = [i + 1]
        succ.append([j for j in nxt if j < len(blocks)])
    preds: list[list[int]] = [[] for _ in blocks]
    for i, ss in enumerate(succ):
        for j in ss:
            preds[j].append(i)
    waited_in = [i > 0 for i in range(len(blocks))]  # must-analysis: start from "all waited" but the entry

    def waited_out(i: int) -> bool:
        return waited_in[i] or any("griddepcontrol.wait" in s for s in blocks[i])

    changed = True
    while changed:
        changed = False
        for i in range(1, len(blocks)):
            v = bool(preds[i]) and all(waited_out(p) for p in preds[i])
            if v != waited_in[i]:
                waited_in[i], changed = v, True
    rep = Report(sum("griddepcontrol.wait" in s for s in ins), sum("griddepcontrol.launch_dependents" in s for s in ins),
                 False)  # fmt: skip
    for i, b in enumerate(blocks):
        w = waited_in[i]
        for s in b:
            if "griddepcontrol.wait" in s:
                w = True
                continue
            core = _core(s)
            if w:
                continue
            if core.startswith(("ret", "exit")):
                rep.ret_unwaited = True
            elif _MEM.match(core):
                if core.startswith(_WRITES):
                    rep.early_writes.append(core)
                else:
                    addr = re.findall(r"\[\s*(%rd\d+)", core)
                    rep.early_loads.append((core, set().union(*(taint.get(a, set()) for a in addr))))
    return rep
