"""bench.aot.sass: the ptxas log, SASS counts, loads in flight and occupancy on hand-written
input."""

from __future__ import annotations

import pytest

from bench.aot.sass import find_loops, occupancy, parse_ptxas_log, parse_sass, sass_figures

# cuobjdump -sass layout: three loads in flight (the 128-bit one's last register, R7, is read
# first), a loop of one load, max and store at 0x60-0x90, the padding branch after EXIT
SASS = """
        Function : _kernel
        .headerflags    @"EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   MOV R1, c[0x0][0x28] ;              /* 0x00000a00ff017b02 */
        /*0010*/                   LDG.E.128 R4, desc[UR4][R2.64] ;    /* 0x0000000402047981 */
        /*0020*/                   LDG.E R8, desc[UR4][R2.64+0x10] ;   /* 0x0000100402087981 */
        /*0030*/               @P0 LDG.E.64 R10, desc[UR4][R12.64] ;   /* 0x000000040c0a0981 */
        /*0040*/                   FADD R7, R7, 1 ;                    /* 0x3f80000007077421 */
        /*0050*/                   STG.E desc[UR4][R2.64], R8 ;        /* 0x0000000802007986 */
        /*0060*/                   LDG.E R9, desc[UR4][R14.64] ;       /* 0x000000040e097981 */
        /*0070*/                   FMNMX R0, R0, R9, !PT ;             /* 0x0000000900007209 */
        /*0080*/                   STG.E desc[UR4][R14.64], R0 ;       /* 0x000000000e007986 */
        /*0090*/              @!P1 BRA 0x60 ;                          /* 0xfffffffc0000a947 */
        /*00a0*/                   EXIT ;                              /* 0x000000000000794d */
        /*00b0*/                   BRA 0xb0;                           /* 0xfffffffc00fc7947 */
"""


def test_sass_is_parsed_with_guards_and_modifiers() -> None:
    instrs = parse_sass(SASS)
    assert len(instrs) == 12 and instrs[3].addr == 0x30
    assert instrs[3].opcode == "LDG.E.64" and instrs[3].base == "LDG" and instrs[3].predicated
    assert instrs[4].operands == ("R7", "R7", "1")
    assert find_loops(instrs) == [(0x60, 0x90)]  # the branch to itself is not a loop


def test_counts_loads_in_flight_and_per_thread_work() -> None:
    fig = sass_figures(parse_sass(SASS), trips=(10,))
    assert fig["ldg"] == 4 and fig["stg"] == 2 and fig["ldg_widths"] == "2x4B 1x8B 1x16B"
    assert (fig["loads_in_flight"], fig["bytes_in_flight"]) == (3, 16 + 4 + 8)
    assert fig["instr_per_thread"] == 12 - 4 + 4 * 10
    assert fig["global_bytes_per_thread"] == (16 + 4 + 8 + 4) + (4 + 4) * 10
    unknown = sass_figures(parse_sass(SASS), trips=(10, 2))  # not the loops found
    assert unknown["instr_per_thread"] is None and unknown["global_bytes_per_thread"] is None


def test_a_load_used_at_once_has_one_in_flight() -> None:
    text = "\n".join(
        f"        /*{a:04x}*/ {ins} ;"
        for a, ins in enumerate(
            ["LDG.E R4, desc[UR4][R2.64]", "FMNMX R0, R0, R4, !PT", "LDG.E R5, desc[UR4][R2.64]",
             "STG.E desc[UR4][R6.64], R5", "EXIT"]
        )
    )  # fmt: skip
    assert sass_figures(parse_sass(text))["loads_in_flight"] == 1


def test_ptxas_log() -> None:
    log = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_k' for 'sm_80'
ptxas info    : Function properties for _k
    24 bytes stack frame, 16 bytes spill stores, 20 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 416 bytes cmem[0]
ptxas info    : Compile time = 1234.5 ms
ptxas info    : Function properties for __internal_0_$__cuda_sm3x_div_rn_noftz_f32_slowpath
    8 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
"""
    expected = {"regs": 255, "stack": 32, "spill_stores": 16, "spill_loads": 20, "ptxas_s": 1.23}
    assert parse_ptxas_log(log) == expected
    with pytest.raises(ValueError, match="no register count"):
        parse_ptxas_log("ptxas fatal   : Unresolved extern function")


@pytest.mark.parametrize(
    "arch, regs, smem, warps, expected",
    [
        (90, 32, 0, 2, (64, "warps")),  # 32 registers: a full SM
        (90, 168, 8192, 4, (12, "registers")),  # 5376 per warp: 3 CTAs of 4 warps
        (90, 112, 2048, 4, (16, "registers")),
        (80, 32, 100_000, 4, (4, "shared memory")),  # 164 KB per SM: one CTA
        (90, 32, 100_000, 4, (8, "shared memory")),  # 228 KB: two
    ],
    ids=str,
)
def test_occupancy(arch: int, regs: int, smem: int, warps: int, expected: tuple) -> None:
    occ = occupancy(arch, regs, smem, warps)
    assert (occ["warps_per_sm"], occ["limited_by"]) == expected
    assert occ["occupancy"] == expected[0] / 64
