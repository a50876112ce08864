"""Static figures of a compiled NVIDIA kernel: the ptxas -v log, its SASS and its occupancy.

Pure text processing, used by :mod:`bench.aot.compile` (nothing here needs a GPU or triton):

- :func:`parse_ptxas_log`: registers, spill stores and loads, stack frame of the entry
  function, from ``ptxas -v``;
- :func:`parse_sass`: the instructions of ``cuobjdump -sass`` (address, opcode, operands);
- :func:`find_loops`: loops as (first, last) addresses of their bodies, from backward branches;
- :func:`sass_figures`: instruction counts (LDG with widths, STG, LDL/STL = local memory, that
  is spills, shared memory, barriers, shuffles, calls), the loads one thread has in flight and
  the bytes they carry, and, given each loop's trip count, the instructions and global bytes
  one thread executes;
- :func:`occupancy`: resident CTAs and warps per SM from registers, shared memory and warps.

Loads in flight (static, per thread): for each global load, 1 + the global loads issued after
it in program order before the first instruction that reads (or overwrites) its destination
registers; the scan stops at the end of a loop body or an EXIT. The maximum over loads is the
memory-level parallelism one thread can expose; "bytes in flight" is the largest sum of load
widths over such a window. Approximations: straight-line order (a forward branch is not
followed), and registers read implicitly by a 64-bit operand (the odd half of a pair) are not
seen. A static count is a proxy: it says what the code allows, not what the GPU achieves.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GPU_LIMITS",
    "Instr",
    "SmLimits",
    "find_loops",
    "occupancy",
    "parse_ptxas_log",
    "parse_sass",
    "sass_figures",
]


@dataclass(frozen=True)
class SmLimits:
    """Per-SM resources of one architecture (CUDA occupancy calculator, compute capability)."""

    gpu: str  # the reference GPU of the arch, for waves: grid / (CTAs per SM * SMs)
    sms: int
    max_warps: int = 64
    max_ctas: int = 32
    regs: int = 65536  # 32-bit registers per SM
    reg_unit: int = 256  # registers are allocated per warp in units of 256
    smem: int = 228 * 1024  # shared memory per SM that CTAs can use (max carve-out)
    smem_reserved: int = 1024  # reserved by the CUDA runtime per CTA (sm_80 and later)
    smem_unit: int = 128


GPU_LIMITS: dict[int, SmLimits] = {
    80: SmLimits("A100", sms=108, smem=164 * 1024),
    90: SmLimits("H100 SXM / H200", sms=132, smem=228 * 1024),
}

# opcodes (before the first ".") whose operands are all read: no register destination
_NO_DST = {
    "ST", "STG", "STS", "STL", "RED", "REDG", "REDUX", "BAR", "BRA", "BRX", "JMP", "EXIT",
    "RET", "CALL", "MEMBAR", "NOP", "BSSY", "BSYNC", "WARPSYNC", "YIELD", "ERRBAR", "CCTL",
    "DEPBAR", "FENCE", "BPT", "KILL", "ARRIVES", "SYNCS",
}  # fmt: skip
_LINE = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_PRED = re.compile(r"^@!?U?P[T\d]+\s+")
_REG = re.compile(r"(?<![\w.])R(\d+)((?:\.\w+)*)")
_HEX = re.compile(r"0x([0-9a-f]+)")


@dataclass(frozen=True)
class Instr:
    """One SASS instruction: address (bytes), opcode with modifiers, operands (without guard)."""

    addr: int
    opcode: str
    operands: tuple[str, ...]
    predicated: bool

    @property
    def base(self) -> str:
        """The opcode without modifiers: ``LDG`` for ``LDG.E.128``."""
        return self.opcode.split(".")[0]


def parse_ptxas_log(log: str) -> dict[str, Any]:
    """``{"regs", "stack", "spill_stores", "spill_loads", "ptxas_s"}`` of the entry function.

    ``ptxas -v`` prints, per function, "Function properties for NAME: S bytes stack frame,
    A bytes spill stores, B bytes spill loads", for entry functions "Used R registers", and
    "Compile time = T ms". Spills and stack (bytes) are summed over the functions of the log
    (callees included), registers are the entry function's, ptxas_s is ptxas's own time in
    seconds (0.0 when not printed). Raises ValueError when the log has no register count.
    """
    regs = re.search(r"Used (\d+) registers", log)
    if regs is None:
        raise ValueError(f"no register count in the ptxas log:\n{log[:2000]}")
    ms = sum(float(t) for t in re.findall(r"Compile time = ([\d.]+) ms", log))
    out = {"regs": int(regs.group(1)), "stack": 0, "spill_stores": 0, "spill_loads": 0}
    out["ptxas_s"] = round(ms / 1000, 2)
    pat = r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads"
    for m in re.finditer(pat, log):
        out["stack"] += int(m.group(1))
        out["spill_stores"] += int(m.group(2))
        out["spill_loads"] += int(m.group(3))
    return out


def parse_sass(text: str) -> list[Instr]:
    """The instructions of ``cuobjdump -sass`` output, in address order."""
    instrs = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        body = m.group(2)
        guard = _PRED.match(body)
        if guard:
            body = body[guard.end() :]
        opcode, _, rest = body.partition(" ")
        operands = tuple(o.strip() for o in rest.split(",") if o.strip())
        instrs.append(Instr(int(m.group(1), 16), opcode, operands, guard is not None))
    return instrs


def _width(opcode: str) -> int:
    """Bytes moved per thread by a global load or store: ``LDG.E.128`` -> 16."""
    mods = set(opcode.split(".")[1:])
    for mod, size in (("128", 16), ("64", 8), ("U16", 2), ("S16", 2), ("U8", 1), ("S8", 1)):
        if mod in mods:
            return size
    return 4


def _regs(operand: str, wide: int = 1) -> set[int]:
    """Register numbers of one operand; ``R2.64`` (an address pair) is R2 and R3."""
    found = set()
    for m in _REG.finditer(operand):
        n = int(m.group(1))
        mods = m.group(2).split(".")
        count = 4 if "128" in mods else 2 if "64" in mods else wide
        found.update(range(n, n + count))
    return found


def _dst_src(ins: Instr) -> tuple[set[int], set[int]]:
    """Registers written and read by ``ins``."""
    ops = ins.operands
    if ins.base in _NO_DST:
        data = max(1, _width(ins.opcode) // 4) if ins.base in ("STG", "STS", "STL", "ST") else 1
        return set(), set().union(*(_regs(o) for o in ops[:1]), *(_regs(o, data) for o in ops[1:]))
    n_dst = 2 if ins.base == "SHFL" else 1  # SHFL writes a predicate, then a register
    wide = max(1, _width(ins.opcode) // 4) if ins.base in ("LDG", "LDS", "LDL", "LD") else 1
    dst = set().union(*(_regs(o, wide) for o in ops[:n_dst]))
    return dst, set().union(*(_regs(o) for o in ops[n_dst:]))


def _branch_target(ins: Instr) -> int | None:
    if ins.base not in ("BRA", "JMP") or not ins.operands:
        return None
    m = _HEX.search(ins.operands[-1])
    return int(m.group(1), 16) if m else None


def find_loops(instrs: list[Instr]) -> list[tuple[int, int]]:
    """Loops as ``(first, last)`` instruction addresses, sorted by first address.

    A loop is a branch to an earlier address (a branch to itself, the padding after the last
    EXIT, is not); branches back to the same header are one loop, ending at the last of them.
    """
    ends: dict[int, int] = {}
    for ins in instrs:
        target = _branch_target(ins)
        if target is not None and target < ins.addr:
            ends[target] = max(ends.get(target, 0), ins.addr)
    return sorted(ends.items())


def _in_flight(instrs: list[Instr], loop_ends: set[int]) -> tuple[int, int]:
    """(most loads, most bytes) one thread has in flight; see the module docstring."""
    regs = [_dst_src(i) for i in instrs]
    best_n = best_b = 0
    for k, ins in enumerate(instrs):
        if ins.base != "LDG":
            continue
        pending, count, size = regs[k][0], 1, _width(ins.opcode)
        for j in range(k + 1, len(instrs)):
            nxt, (dst, src) = instrs[j], regs[j]
            if src & pending or dst & pending:
                break
            if nxt.base == "LDG":
                count, size = count + 1, size + _width(nxt.opcode)
            if nxt.addr in loop_ends or (nxt.base == "EXIT" and not nxt.predicated):
                break
        best_n, best_b = max(best_n, count), max(best_b, size)
    return best_n, best_b


def sass_figures(instrs: list[Instr], trips: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Counts and static estimates of one kernel's SASS.

    trips: the trip count of each loop of :func:`find_loops`, in its order (None: unknown).
    With it, ``instr_per_thread`` and ``global_bytes_per_thread`` weight every instruction by
    the trips of the loops holding it (straight-line code and called subroutines count
    once); they are None when trips is None or does not match the loops found.
    """
    ops = Counter(i.base for i in instrs)
    loops = find_loops(instrs)
    loads, stores = [i for i in instrs if i.base == "LDG"], [i for i in instrs if i.base == "STG"]
    widths = Counter(_width(i.opcode) for i in loads)
    in_flight, bytes_in_flight = _in_flight(instrs, {end for _, end in loops})
    out: dict[str, Any] = {
        "instr_static": len(instrs),
        "ldg": len(loads),
        "ldg_widths": " ".join(f"{widths[w]}x{w}B" for w in sorted(widths)),
        "stg": len(stores),
        "ldl": ops["LDL"],
        "stl": ops["STL"],
        "lds": ops["LDS"],
        "sts": ops["STS"],
        "bar": ops["BAR"],
        "shfl": ops["SHFL"],
        "call": ops["CALL"],
        "fp64": sum(ops[o] for o in ("DADD", "DMUL", "DFMA", "DSETP", "DMNMX")),
        "loops": len(loops),
        "loads_in_flight": in_flight,
        "bytes_in_flight": bytes_in_flight,
        "instr_per_thread": None,
        "global_bytes_per_thread": None,
    }
    if trips is not None and len(trips) == len(loops):

        def weight(addr: int) -> int:
            return math.prod(t for (a, b), t in zip(loops, trips) if a <= addr <= b)

        out["instr_per_thread"] = sum(weight(i.addr) for i in instrs)
        out["global_bytes_per_thread"] = sum(
            weight(i.addr) * _width(i.opcode) for i in instrs if i.base in ("LDG", "STG")
        )
    return out


def occupancy(arch: int, regs: int, smem: int, num_warps: int) -> dict[str, Any]:
    """Resident CTAs and warps per SM, and which resource limits them.

    CUDA occupancy calculator rules: registers per warp rounded up to ``reg_unit``; shared
    memory per CTA = the kernel's + ``smem_reserved``, rounded up to ``smem_unit``.
    """
    lim = GPU_LIMITS[arch]
    reg_warp = math.ceil(max(regs, 1) * 32 / lim.reg_unit) * lim.reg_unit
    smem_cta = math.ceil((smem + lim.smem_reserved) / lim.smem_unit) * lim.smem_unit
    bounds = {
        "warps": lim.max_warps // num_warps,
        "ctas": lim.max_ctas,
        "registers": lim.regs // (reg_warp * num_warps),
        "shared memory": lim.smem // smem_cta,
    }
    ctas = min(bounds.values())
    return {
        "ctas_per_sm": ctas,
        "warps_per_sm": ctas * num_warps,
        "occupancy": ctas * num_warps / lim.max_warps,
        "limited_by": min(bounds, key=lambda k: (bounds[k], k != "warps")),
    }
