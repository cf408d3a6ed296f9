"""Write the self-contained C project of a model for one chip.

Files written to the output folder:

``ek_model.c`` / ``ek_model.h``
    the weights as const arrays, one const parameter struct per op, the arena (one static array sized by
    :mod:`.plan`) and ``ek_model_invoke()`` calling the kernels in the file's op order;
``ek_kernels.c`` / ``ek_kernels.h``
    the int8 kernels (copied from the package);
``ek_main.c``, ``ek_platform.h``, ``ek_platform_host.c``, ``ek_platform_cm.c``
    ``main`` (one inference per input between two tick readings) and the host / bare-metal Cortex-M platforms;
``link.ld``
    the linker script with the chip's flash and RAM (vector table, FLASH, RAM with the stack at its top);
``Makefile``
    ``make host`` / ``make debug`` (host gcc), ``make arm`` (arm-none-eabi-gcc), ``make run`` (QEMU);
``ek_frontend.c`` / ``ek_frontend.h``, ``ek_frontend_config.h``, ``ek_frontend_tables.c``, ``ek_app.c``
    (with a front end, :mod:`.frontend`) the streaming log-mel of the model's FrontendSpec fed from an int16 ring,
    its tables generated from the spec, and the audio-in -> label-out program;
``ek_project.json``
    what the generator knows (ops, MACs, tensors dumped per op, arena plan, chip, front end) for the runner.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .chips import DEFAULT_STACK_BYTES, VECTOR_BYTES, Chip, get_chip
from .frontend import FrontendPlan, frontend_sources, plan_frontend
from .graph import Model, read_model
from .lower import Lowered, find_fusions, lower_model
from .plan import MemoryPlan, plan_memory

#: C sources copied verbatim from the package
RUNTIME_FILES = ("ek_kernels.h", "ek_kernels.c", "ek_main.c", "ek_platform.h", "ek_platform_host.c",
                 "ek_platform_cm.c")
#: C sources of the front end and the audio-in -> label-out program, copied when the project has a front end
FRONTEND_RUNTIME_FILES = ("ek_frontend.h", "ek_frontend.c", "ek_app.c")

_CTYPES = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "int32": "int32_t", "float32": "float",
           "int64": "int64_t", "bool": "uint8_t"}


@dataclass(frozen=True, kw_only=True)
class Project:
    """A generated project: where it is, for which chip, and what the generator computed.

    Attributes:
        out_dir: the project folder.
        chip: the target chip.
        op_names: op type of every op, in execution order.
        op_macs: multiply-accumulates of every op (0 outside conv/dense).
        op_outputs: output tensor indices of every op (what a debug build dumps).
        arena_bytes: the planned arena.
        peak_live_bytes: the largest sum of live buffers (a lower bound of any arena).
        weight_bytes: bytes of constant data emitted (weights, biases).
        input_tensors, output_tensors: graph input / output tensor indices.
        frontend: the front end compiled into the audio-in -> label-out program (None: the model alone).
        input_bytes, output_bytes: bytes of all input / output tensors together.
    """

    out_dir: Path
    chip: Chip
    op_names: tuple[str, ...]
    op_macs: tuple[int, ...]
    op_outputs: tuple[tuple[int, ...], ...]
    arena_bytes: int
    peak_live_bytes: int
    weight_bytes: int
    input_tensors: tuple[int, ...]
    output_tensors: tuple[int, ...]
    frontend: FrontendPlan | None = None
    input_bytes: int = 0
    output_bytes: int = 0

    def to_json(self) -> dict:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        d["chip"] = self.chip.key
        d["frontend"] = self.frontend.to_json() if self.frontend is not None else None
        return d


def _c_array(t, name: str) -> str:
    ctype = _CTYPES[t.dtype]
    flat = np.asarray(t.data).reshape(-1)
    if t.dtype == "float32":
        vals = [repr(float(v)) + "f" for v in flat.tolist()]
    else:
        vals = [str(int(v)) for v in flat.astype(np.int64).tolist()]
    per = 32
    lines = ",\n    ".join(", ".join(vals[i:i + per]) for i in range(0, len(vals), per)) or "0"
    return f"static const {ctype} {name}[{max(len(vals), 1)}] __attribute__((aligned(4))) = {{\n    {lines}}};"


def _model_sources(model: Model, plan: MemoryPlan, *, single_rounding: bool, fast: bool = True,
                   fusions: dict[int, int] | None = None) -> tuple[str, str, list[Lowered], int]:
    used_consts: dict[int, str] = {}

    def ptr(i: int) -> str:
        t = model.tensors[i]
        if t.is_const:
            used_consts.setdefault(i, f"ek_t{i}")
            return used_consts[i]
        ctype = _CTYPES.get(t.dtype, "int8_t")
        cast = "int8_t" if ctype == "float" else ctype
        return f"(({cast} *)(ek_arena + {plan.offsets[i]}))"

    def scratch(k: int) -> str:
        return f"((int8_t *)(ek_arena + {plan.scratch_offsets[k]}))" if k in plan.scratch_offsets else "NULL"

    lowered = lower_model(model, ptr, scratch, single_rounding=single_rounding, fast=fast, fusions=fusions)
    n_ops = len(model.ops)
    out: list[str] = [
        "/* Generated by edge-asc firmware: do not edit. */",
        '#include "ek_model.h"',
        '#include "ek_kernels.h"',
        "",
        "#ifndef EK_PROFILE",
        "#define EK_PROFILE 0",
        "#endif",
        "#ifndef EK_DEBUG_DUMP",
        "#define EK_DEBUG_DUMP 0",
        "#endif",
        "#if EK_PROFILE",
        '#include "ek_platform.h"',
        f"uint64_t ek_op_ticks[{n_ops}];",
        "#define EK_OP_BEGIN(k) const uint64_t ek_t0_##k = ek_ticks()",
        "#define EK_OP_END(k) ek_op_ticks[k] += ek_ticks() - ek_t0_##k",
        "#else",
        "#define EK_OP_BEGIN(k)",
        "#define EK_OP_END(k)",
        "#endif",
        "#if EK_DEBUG_DUMP",
        "void ek_dump(int op, int tensor, const void *data, uint32_t bytes);",
        "#define EK_DUMP(k, t, p, n) ek_dump(k, t, p, n)",
        "#else",
        "#define EK_DUMP(k, t, p, n)",
        "#endif",
        "",
        f"uint8_t ek_arena[{max(plan.arena_bytes, 16)}] __attribute__((aligned(16)));",
        "",
    ]
    body: list[str] = []
    for low, op in zip(lowered, model.ops):
        body.append(f"    /* op {op.index}: {op.name} */")
        body.append("    {")
        body.append(f"        EK_OP_BEGIN({op.index});")
        body.extend("        " + line for line in low.body)
        body.append(f"        EK_OP_END({op.index});")
        for o in op.outputs:
            t = model.tensors[o]
            if not t.is_const and o in plan.offsets:
                body.append(f"        EK_DUMP({op.index}, {o}, ek_arena + {plan.offsets[o]}, {t.nbytes});")
        body.append("    }")
    weight_bytes = 0
    for i, name in sorted(used_consts.items()):
        t = model.tensors[i]
        out.append(_c_array(t, name))
        weight_bytes += t.nbytes
    weight_bytes += sum(int(m.group(1)) for low in lowered for d in low.decls
                        for m in [re.match(r"static const int8_t ek_p\d+_w\[(\d+)\]", d)] if m)
    out.append("")
    for low in lowered:
        out.extend(low.decls)
    out.append("")
    names = ", ".join(f'"{op.name}"' for op in model.ops)
    out.append(f"const char *const ek_op_names[{n_ops}] = {{{names}}};")
    ins = ", ".join(f"ek_arena + {plan.offsets[i]}" for i in model.inputs)
    outs = ", ".join(f"ek_arena + {plan.offsets[i]}" for i in model.outputs)
    out.append(f"void *const ek_inputs[{len(model.inputs)}] = {{{ins}}};")
    out.append(f"const uint32_t ek_input_bytes[{len(model.inputs)}] = "
               f"{{{', '.join(str(model.tensors[i].nbytes) for i in model.inputs)}}};")
    out.append(f"void *const ek_outputs[{len(model.outputs)}] = {{{outs}}};")
    out.append(f"const uint32_t ek_output_bytes[{len(model.outputs)}] = "
               f"{{{', '.join(str(model.tensors[i].nbytes) for i in model.outputs)}}};")
    out.append("")
    out.append("void ek_model_invoke(void) {")
    out.extend(body)
    out.append("}")
    header = "\n".join([
        "/* Generated by edge-asc firmware: do not edit. */",
        "#ifndef EK_MODEL_H",
        "#define EK_MODEL_H",
        "#include <stdint.h>",
        f"#define EK_N_OPS {n_ops}",
        f"#define EK_N_INPUTS {len(model.inputs)}",
        f"#define EK_N_OUTPUTS {len(model.outputs)}",
        f"#define EK_ARENA_BYTES {max(plan.arena_bytes, 16)}",
        "extern uint8_t ek_arena[];",
        f"extern void *const ek_inputs[{len(model.inputs)}];",
        f"extern const uint32_t ek_input_bytes[{len(model.inputs)}];",
        f"extern void *const ek_outputs[{len(model.outputs)}];",
        f"extern const uint32_t ek_output_bytes[{len(model.outputs)}];",
        f"extern const char *const ek_op_names[{n_ops}];",
        f"extern uint64_t ek_op_ticks[{n_ops}];",
        "/* Run one inference: read ek_inputs, write ek_outputs. */",
        "void ek_model_invoke(void);",
        "#endif",
        "",
    ])
    return "\n".join(out) + "\n", header, lowered, weight_bytes


def linker_script(chip: Chip, stack_bytes: int = DEFAULT_STACK_BYTES) -> str:
    """GNU ld script with the chip's flash and RAM; an oversized model fails with 'region ... overflowed'."""
    return f"""/* Generated by edge-asc firmware for {chip.name}. */
ENTRY(ek_reset)
MEMORY
{{
  VECTORS (rx) : ORIGIN = 0x00000000, LENGTH = {VECTOR_BYTES}
  FLASH (rx)   : ORIGIN = {chip.flash_origin:#010x}, LENGTH = {chip.flash_bytes - VECTOR_BYTES}
  RAM (rwx)    : ORIGIN = {chip.ram_origin:#010x}, LENGTH = {chip.ram_bytes}
}}
SECTIONS
{{
  .vectors : {{ KEEP(*(.ek_vectors)) }} > VECTORS
  .text : {{ *(.text*) *(.rodata*) . = ALIGN(4); }} > FLASH
  .ARM.exidx : {{ *(.ARM.exidx*) }} > FLASH
  .data : {{ . = ALIGN(4); _sdata = .; *(.data*) . = ALIGN(4); _edata = .; }} > RAM AT > FLASH
  _sidata = LOADADDR(.data);
  .bss (NOLOAD) : {{ . = ALIGN(16); _sbss = .; *(.bss*) *(COMMON) . = ALIGN(4); _ebss = .; }} > RAM
  .stack (NOLOAD) : {{ . = ALIGN(8); _sstack = .; . = . + {stack_bytes}; . = ALIGN(8); _estack = .; }} > RAM
  /DISCARD/ : {{ *(.ARM.attributes) *(.comment) }}
}}
"""


def makefile(chip: Chip, frontend: bool = False) -> str:
    arch = " ".join(chip.cflags)
    app_help = ("#   make app     audio in -> label out (host)             make app-arm / app-run  the same for the "
                "chip / QEMU\n" if frontend else "")
    app = "" if not frontend else f"""
# audio in -> label out: the front end (int16 ring -> log-mel -> int8 input tensor) and the model
APP_SRC = ek_model.c ek_kernels.c ek_frontend.c ek_frontend_tables.c ek_app.c

app: build/host/app
app-arm: build/arm/app.elf

build/host/app: $(APP_SRC) ek_platform_host.c *.h
\tmkdir -p build/host
\t$(CC) -std=c99 $(OPT) $(WARN) -DEK_APP_DUMP=1 $(EXTRA) -o $@ $(APP_SRC) ek_platform_host.c -lm

build/arm/app.elf: $(APP_SRC) ek_platform_cm.c *.h link.ld
\tmkdir -p build/arm
\t$(ARM_CC) $(ARCH) -std=c99 $(OPT) $(WARN) -ffunction-sections -fdata-sections $(EXTRA) \\
\t  -nostartfiles -T link.ld -Wl,--gc-sections -Wl,-Map=build/arm/app.map -o $@ $(APP_SRC) ek_platform_cm.c \\
\t  -lm -lc -lgcc

app-run: build/arm/app.elf
\t$(QEMU) -M {chip.qemu_machine} -nographic -semihosting-config enable=on,target=native -icount shift=0 \\
\t  -kernel build/arm/app.elf

.PHONY: app app-arm app-run
"""
    return f"""# Generated by edge-asc firmware for {chip.name}.
#   make host    host build (gcc): build/host/model      make debug   host build dumping every op's output
#   make arm     {chip.core} build: build/arm/model.elf   make run     run it under QEMU ({chip.qemu_machine})
{app_help}CC ?= cc
ARM_CC ?= arm-none-eabi-gcc
QEMU ?= qemu-system-arm
OPT ?= -O2
EXTRA ?=
WARN = -Wall -Wextra -Wno-unused-parameter -Wno-unused-variable
SRC = ek_model.c ek_kernels.c ek_main.c
ARCH = {arch}

host: build/host/model
debug: build/debug/model
arm: build/arm/model.elf

build/host/model: $(SRC) ek_platform_host.c *.h
\tmkdir -p build/host
\t$(CC) -std=c99 $(OPT) $(WARN) $(EXTRA) -o $@ $(SRC) ek_platform_host.c

build/debug/model: $(SRC) ek_platform_host.c *.h
\tmkdir -p build/debug
\t$(CC) -std=c99 -O1 -g $(WARN) -DEK_DEBUG_DUMP=1 $(EXTRA) -o $@ $(SRC) ek_platform_host.c

build/arm/model.elf: $(SRC) ek_platform_cm.c *.h link.ld
\tmkdir -p build/arm
\t$(ARM_CC) $(ARCH) -std=c99 $(OPT) $(WARN) -ffunction-sections -fdata-sections -DEK_PROFILE=1 $(EXTRA) \\
\t  -nostartfiles -T link.ld -Wl,--gc-sections -Wl,-Map=build/arm/model.map -o $@ $(SRC) ek_platform_cm.c \\
\t  -lc -lgcc

run: build/arm/model.elf
\t$(QEMU) -M {chip.qemu_machine} -nographic -semihosting-config enable=on,target=native -icount shift=0 \\
\t  -kernel build/arm/model.elf

.PHONY: host debug arm run
""" + app


def generate(model_bytes: bytes, target: str | Chip, out_dir: str | os.PathLike, *, single_rounding: bool = False,
             stack_bytes: int = DEFAULT_STACK_BYTES, fast: bool = True, frontend: str | None = None,
             hop_frames: int | None = None) -> Project:
    """Generate the C project of a full-int8 ``.tflite`` for one chip.

    Args:
        model_bytes: the ``.tflite`` file's bytes.
        target: a chip key of :data:`edge_asc.firmware_bench.codegen.chips.CHIPS` or a :class:`Chip`.
        out_dir: the project folder (created; generated files are overwritten).
        single_rounding: requantise as TFLite builds with ``TFLITE_SINGLE_ROUNDING`` (default: double rounding,
            TFLite Micro's default).
        stack_bytes: main stack reserved at the top of RAM.
        fast: use the fast kernels where they apply (False: TFLite's reference loop structure everywhere).
        frontend: None: the model alone; 'card': add the front end of the file's model card; a front-end preset
            name (e.g. 'edge'): the card's front end when the file has a card, else that preset fitted to the input
            tensor (:func:`.frontend.plan_frontend`).
        hop_frames: frames between model windows in the audio-in -> label-out program (default half a window).

    Raises:
        UnsupportedOpError: an op the generator has no kernel for (one line naming them).
        ModelContractError: not a TFLite file; a front end that does not fit the input tensor.
        ConfigError: 'card' for a file without a card; a front end the firmware cannot compute.
        UsageError: unknown target.
    """
    chip = get_chip(target) if isinstance(target, str) else target
    model = read_model(model_bytes)
    # fusions and scratch sizes first (a dry lowering), then the plan that places them, then the code
    fusions = find_fusions(model) if fast else {}
    dry = lower_model(model, lambda i: "p", lambda k: "s", single_rounding=single_rounding, fast=fast,
                      fusions=fusions)
    plan = plan_memory(model, {low.index: low.scratch for low in dry if low.scratch}, fusions=fusions)
    source, header, lowered, weight_bytes = _model_sources(model, plan, single_rounding=single_rounding, fast=fast,
                                                           fusions=fusions)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ek_model.c").write_text(source)
    (out / "ek_model.h").write_text(header)
    pkg = resources.files("edge_asc.firmware_bench.codegen") / "c"
    for name in RUNTIME_FILES:
        (out / name).write_text((pkg / name).read_text())
    (out / "link.ld").write_text(linker_script(chip, stack_bytes))
    fe = None
    if frontend is not None:
        from ...artifact import CARD_NAME, read_artifact

        art = read_artifact(model_bytes)
        card = art.card if CARD_NAME in art.metadata else None
        fe = plan_frontend(model, card=card, preset=None if frontend == "card" else frontend, hop_frames=hop_frames)
        for name, text in frontend_sources(fe).items():
            (out / name).write_text(text)
        for name in FRONTEND_RUNTIME_FILES:
            (out / name).write_text((pkg / name).read_text())
    (out / "Makefile").write_text(makefile(chip, frontend=fe is not None))
    project = Project(
        out_dir=out, chip=chip, op_names=tuple(op.name for op in model.ops),
        op_macs=tuple(low.macs for low in lowered),
        op_outputs=tuple(tuple(i for i in op.outputs if i in plan.offsets) for op in model.ops),
        arena_bytes=plan.arena_bytes, peak_live_bytes=plan.peak_live_bytes, weight_bytes=weight_bytes,
        input_tensors=model.inputs, output_tensors=model.outputs, frontend=fe,
        input_bytes=sum(model.tensors[i].nbytes for i in model.inputs),
        output_bytes=sum(model.tensors[i].nbytes for i in model.outputs))
    (out / "ek_project.json").write_text(json.dumps(project.to_json(), indent=1) + "\n")
    return project
