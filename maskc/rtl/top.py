"""The top module of the RTL export: the netlist's op list (:mod:`maskc.netlist.ops`) as a
sequencer that runs one op at a time over slot registers (docs/rtl.md).

Every op of the netlist becomes one instance: a matrix module (part A's ``mx_*`` / ``emb_*``,
the personalization) or a base-die unit (``maskc_*``, maskc/rtl/verilog/units). Slots are the
netlist's named values: a signal slot is a register of ``32 * n`` bits, an act8 slot four
registers (codes, group shifts, mantissa, exponent). A step pulses its instance's ``start``,
waits for its ``done`` and copies the instance's registered output into the out slot (matrix
rows are written as they stream out). After the last op the greedy argmax runs on the logits.

This module only reads the netlist (:class:`maskc.netlist.Netlist`): the RTL is a third
reader of it beside the layers and the emulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from maskc.errors import UnsupportedError
from maskc.netlist import ops as O

#: the op kinds the RTL export implements (docs/rtl.md, "Not supported yet")
SUPPORTED = ("embed", "rmsnorm", "matmul", "rope", "attention", "quantize", "add", "swiglu",
             "logits")  # fmt: skip
TOP = "maskc_top"


def bitlen(n: int) -> int:
    return int(n).bit_length()


def vid(name: str) -> str:
    """A Verilog identifier for a slot name."""
    return "".join(c if c.isalnum() else "_" for c in name)


def param_file(name: str) -> str:
    """The $readmemh file of a netlist param (relative to the RTL folder)."""
    return f"tables/{vid(name)}.hex"


@dataclass
class Plan:
    """What the top needs: slot widths, the logits slot, the matrices and params it uses."""

    signals: dict[str, int] = field(default_factory=dict)
    act8: dict[str, int] = field(default_factory=dict)
    logits: str = ""
    matmuls: list[tuple[str, str | None]] = field(default_factory=list)  # (matrix, bias)
    embeds: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)


def check_supported(nl) -> None:
    """Refuse, in one line, what the RTL export does not implement yet."""
    where = f"{nl.path}" if getattr(nl, "path", None) else "netlist"
    for i, op in enumerate(nl.ops):
        if op.KIND not in SUPPORTED:
            raise UnsupportedError(
                f"{where}: op {i} ({op.KIND}) is not supported by the RTL export yet "
                f"(supported: {', '.join(SUPPORTED)}; docs/rtl.md)"
            )
    for name, m in sorted(nl.matrices.items()):
        if "input_perm" in m:
            raise UnsupportedError(
                f"{where}: matrix {name} has an input permutation, which is not supported by "
                "the RTL export yet (docs/rtl.md)"
            )
        kind = m["format"].get("kind", "int")
        if kind != "int":
            raise UnsupportedError(
                f"{where}: matrix {name} is in the {kind} format, which is not supported by "
                "the RTL export yet (docs/rtl.md)"
            )
    dies = nl.doc["sram"]["dies"]
    if len(dies) != 1:
        raise UnsupportedError(
            f"{where}: the build spans {len(dies)} dies, which is not supported by the RTL "
            "export yet (docs/rtl.md); compile for one die"
        )
    if not any(isinstance(op, O.Logits) for op in nl.ops):
        raise UnsupportedError(f"{where}: the netlist has no logits op; nothing to export")


def plan(nl) -> Plan:
    """Slot widths from the op list (the netlist's dataflow was checked when it was loaded)."""
    check_supported(nl)
    p = Plan()
    a = nl.arch
    sig, act = p.signals, p.act8
    params: set[str] = set()

    def put(d: dict, name: str, n: int, i: int) -> None:
        if d.get(name, n) != n:
            raise UnsupportedError(
                f"op {i}: slot {name} changes width ({d[name]} -> {n}), which is not supported "
                "by the RTL export yet"
            )
        d[name] = n

    for i, op in enumerate(nl.ops):
        match op:
            case O.Embed():
                put(sig, op.out, nl.matrices[op.matrix]["shape"][1], i)
                p.embeds.append(op.matrix)
            case O.RmsNorm():
                put(act, op.out, sig[op.src], i)
                params.add(op.gamma)
            case O.MatMul():
                put(sig, op.out, nl.matrices[op.matrix]["shape"][0], i)
                p.matmuls.append((op.matrix, op.bias))
            case O.Rope():
                put(sig, op.out, sig[op.src], i)
            case O.Attention():
                put(sig, op.out, op.heads * op.head_dim, i)
            case O.Quantize():
                put(act, op.out, sig[op.src], i)
            case O.Add():
                put(sig, op.out, sig[op.a], i)
            case O.SwiGlu():
                put(act, op.out, sig[op.gate], i)
            case O.Logits():
                p.logits = op.src
    if sig[p.logits] != a.vocab_size:
        raise UnsupportedError(f"logits slot {p.logits} is not vocab_size wide")
    p.params = sorted(params)
    return p


def emit_top(nl, p: Plan, mods: dict[str, object], embs: dict[str, object], context: int) -> str:
    """The top module's Verilog. ``mods``/``embs``: part A's ``RtlModule`` per matrix (matmul)
    and per embedding; ``context``: the KV cache depth (positions 0 .. context-1)."""
    a = nl.arch
    num = nl.doc["numerics"]
    f = num["signal_frac"]
    vocab = a.vocab_size
    tb = max(1, bitlen(vocab - 1))
    pb = max(1, bitlen(context - 1))
    hd = a.head_dim
    steps: list[tuple[int, list[str]]] = []  # (step index, copy statements on done)
    inst: list[str] = []
    stream: list[str] = []
    decl: list[str] = []
    lines = [
        "// Generated by maskc export-rtl from the netlist's op list; do not edit.",
        "// The personalization is in the mx_*/emb_* modules (mask-ROM tiles); every maskc_*",
        "// instance is a BASE-DIE MODEL (fixed-function silicon), docs/rtl.md.",
        f"module {TOP} (",
        "  input  wire clk,",
        "  input  wire rst,            // synchronous, active high; also empties nothing: the",
        "                              // KV cache is overwritten position by position",
        "  input  wire start,          // 1-cycle pulse while !busy: run token at pos",
        f"  input  wire [{tb - 1}:0] token,",
        f"  input  wire [{pb - 1}:0] pos,  // 0 .. {context - 1}, in order from 0 per sequence",
        "  output reg  busy,",
        "  output reg  done,           // 1-cycle pulse: logits and next_token valid",
        f"  input  wire [{tb - 1}:0] logit_addr,",
        "  output wire signed [31:0] logit_data,  // logits[logit_addr], combinational",
        f"  output reg  [{tb - 1}:0] next_token   // greedy argmax, ties to the lowest id",
        ");",
    ]
    for name, n in sorted(p.signals.items()):
        decl.append(f"  reg [{32 * n - 1}:0] sig_{vid(name)};  // signal {name}, {n} x int32")
    for name, n in sorted(p.act8.items()):
        ng = (n + 31) // 32
        v = vid(name)
        decl.append(f"  reg [{8 * n - 1}:0] a8_{v}_x;  // act8 {name}: {n} codes")
        decl.append(f"  reg [{3 * ng - 1}:0] a8_{v}_s;")
        decl.append(f"  reg [11:0] a8_{v}_m;")
        decl.append(f"  reg signed [15:0] a8_{v}_e;")
    decl.append(f"  reg [{tb - 1}:0] tok_r;")
    decl.append(f"  reg [{pb - 1}:0] pos_r;")

    def act_ports(slot: str) -> str:
        v = vid(slot)
        return f".x(a8_{v}_x), .s(a8_{v}_s), .m(a8_{v}_m), .e(a8_{v}_e)"

    def act_out(i: int, n: int) -> tuple[str, list[str]]:
        ng = (n + 31) // 32
        decl.extend([
            f"  wire [{8 * n - 1}:0] o{i}_x;", f"  wire [{3 * ng - 1}:0] o{i}_s;",
            f"  wire [11:0] o{i}_m;", f"  wire signed [15:0] o{i}_e;",
        ])  # fmt: skip
        return f".x(o{i}_x), .s(o{i}_s), .m(o{i}_m), .e(o{i}_e)", []

    def copy_act(i: int, slot: str) -> list[str]:
        v = vid(slot)
        return [f"a8_{v}_{k} <= o{i}_{k};" for k in "xsme"]

    for i, op in enumerate(nl.ops):
        common = f".clk(clk), .rst(rst), .start(st{i}), .done(dn{i})"
        match op:
            case O.Logits():
                continue
            case O.Embed():
                m = embs[op.matrix]
                cb = m.ports["y_col"]
                decl += [f"  wire yv{i};", f"  wire [{cb - 1}:0] yc{i};",
                         f"  wire signed [31:0] y{i};"]  # fmt: skip
                inst.append(
                    f"  {m.name} u{i}_embed ({common}, .token(tok_r), .y_valid(yv{i}), "
                    f".y_col(yc{i}), .y(y{i}));"
                )
                stream.append(f"if (yv{i}) sig_{vid(op.out)}[32 * yc{i} +: 32] <= y{i};")
                copy: list[str] = []
            case O.MatMul():
                m = mods[(op.matrix, op.bias)]
                rb = m.ports["y_row"]
                decl += [f"  wire yv{i};", f"  wire [{rb - 1}:0] yr{i};",
                         f"  wire signed [31:0] y{i};"]  # fmt: skip
                inst.append(
                    f"  {m.name} u{i}_matmul ({common}, {act_ports(op.src)}, .y_valid(yv{i}), "
                    f".y_row(yr{i}), .y(y{i}));"
                )
                stream.append(f"if (yv{i}) sig_{vid(op.out)}[32 * yr{i} +: 32] <= y{i};")
                copy = []
            case O.RmsNorm():
                d = p.signals[op.src]
                ports, _ = act_out(i, d)
                inst.append(
                    f"  maskc_rmsnorm #(.D({d}), .F({f}), .GAMMA_FRAC({op.gamma_frac}), "
                    f'.EPS_D(64\'d{op.eps_d}), .RSQRT_HEX("{param_file("lut.rsqrt")}"), '
                    f'.GAMMA_HEX("{param_file(op.gamma)}")) u{i}_rmsnorm ({common}, '
                    f".h(sig_{vid(op.src)}), {ports});"
                )
                copy = copy_act(i, op.out)
            case O.Quantize():
                n = p.signals[op.src]
                ports, _ = act_out(i, n)
                inst.append(
                    f"  maskc_quantize #(.N({n}), .F({f})) u{i}_quantize ({common}, "
                    f".y(sig_{vid(op.src)}), {ports});"
                )
                copy = copy_act(i, op.out)
            case O.SwiGlu():
                n = p.signals[op.gate]
                ports, _ = act_out(i, n)
                inst.append(
                    f"  maskc_swiglu #(.N({n}), .F({f}), "
                    f'.SIGMOID_HEX("{param_file("lut.sigmoid")}")) u{i}_swiglu ({common}, '
                    f".g(sig_{vid(op.gate)}), .u(sig_{vid(op.up)}), {ports});"
                )
                copy = copy_act(i, op.out)
            case O.Add():
                n = p.signals[op.a]
                decl.append(f"  wire [{32 * n - 1}:0] o{i};")
                inst.append(
                    f"  maskc_add #(.N({n})) u{i}_add ({common}, .a(sig_{vid(op.a)}), "
                    f".b(sig_{vid(op.b)}), .y(o{i}));"
                )
                copy = [f"sig_{vid(op.out)} <= o{i};"]
            case O.Rope():
                n = p.signals[op.src]
                decl.append(f"  wire [{32 * n - 1}:0] o{i};")
                inst.append(
                    f"  maskc_rope #(.HEADS({op.heads}), .HD({hd}), .PB({pb}), "
                    f'.COS_HEX("{param_file("lut.cos")}"), '
                    f'.PHASE_HEX("{param_file("rope.phase_step")}")) u{i}_rope ({common}, '
                    f".pos(pos_r), .y(sig_{vid(op.src)}), .out(o{i}));"
                )
                copy = [f"sig_{vid(op.out)} <= o{i};"]
            case O.Attention():
                n = op.heads * op.head_dim
                decl.append(f"  wire [{32 * n - 1}:0] o{i};")
                inst.append(
                    f"  maskc_attention #(.HEADS({op.heads}), .KVH({op.kv_heads}), "
                    f".HD({op.head_dim}), .CTX({context}), .PB({pb}), .WINDOW({op.window or 0}), "
                    f".F({f}), .INV_SQRT_HD({num['inv_sqrt_hd_q16']}), "
                    f'.LOG2E({num["log2e_q16"]}), .EXP2_HEX("{param_file("lut.exp2")}")) '
                    f"u{i}_attention_l{op.layer} ({common}, .pos(pos_r), .q(sig_{vid(op.q)}), "
                    f".k(sig_{vid(op.k)}), .v(sig_{vid(op.v)}), .out(o{i}));"
                )
                copy = [f"sig_{vid(op.out)} <= o{i};"]
            case _:  # check_supported refused it
                raise AssertionError(op.KIND)
        decl.append(f"  reg st{i};")
        decl.append(f"  wire dn{i};")
        steps.append((i, copy))
    am = len(nl.ops)
    decl += [f"  reg st{am};", f"  wire dn{am};", f"  wire [{tb - 1}:0] o{am};"]
    inst.append(
        f"  maskc_argmax #(.V({vocab}), .TB({tb})) u{am}_argmax (.clk(clk), .rst(rst), "
        f".start(st{am}), .done(dn{am}), .logits(sig_{vid(p.logits)}), .token(o{am}));"
    )
    steps.append((am, [f"next_token <= o{am};"]))
    sb = max(1, bitlen(len(steps)))
    decl += [f"  reg [{sb - 1}:0] step;", "  reg go;"]
    lines += decl
    lines.append("")
    lines += inst
    lines.append("")
    lo = vid(p.logits)
    lines.append(f"  assign logit_data = sig_{lo}[32 * logit_addr +: 32];")
    lines.append("")
    lines.append("  // the sequencer: one op at a time, in the netlist's order")
    lines.append("  always @(posedge clk) begin")
    lines.append("    done <= 1'b0;")
    for i, _ in steps:
        lines.append(f"    st{i} <= 1'b0;")
    lines.append("    if (rst) begin")
    lines.append("      busy <= 1'b0; step <= 0; go <= 1'b0; next_token <= 0;")
    lines.append("    end else if (!busy) begin")
    lines.append("      if (start) begin")
    lines.append("        busy <= 1'b1; step <= 0; go <= 1'b1; tok_r <= token; pos_r <= pos;")
    lines.append("      end")
    lines.append("    end else begin")
    for s in stream:
        lines.append(f"      {s}")
    lines.append("      case (step)")
    for k, (i, copy) in enumerate(steps):
        last = k == len(steps) - 1
        lines.append(f"        {k}: if (go) begin st{i} <= 1'b1; go <= 1'b0; end")
        after = " ".join(copy)
        if last:
            tail = "busy <= 1'b0; done <= 1'b1;"
        else:
            tail = f"step <= {k + 1}; go <= 1'b1;"
        lines.append(
            f"           else if (dn{i}) begin {after} {tail} end".replace("  end", " end")
        )
    lines.append("        default: ;")
    lines.append("      endcase")
    lines.append("    end")
    lines.append("  end")
    lines.append("endmodule")
    return "\n".join(lines) + "\n"


def instances(top_text: str) -> list[dict]:
    """The top's instances, in op order: ``{"instance", "module", "op"}`` (the argmax's op is
    one past the last op), read back from the generated text."""
    import re

    out = []
    for line in top_text.splitlines():
        m = re.match(r"\s+(\w+) .*?\b(u(\d+)_[a-z0-9_]+) \(", line)
        if m:
            out.append({"instance": m.group(2), "module": m.group(1), "op": int(m.group(3))})
    return out


__all__ = [
    "SUPPORTED",
    "TOP",
    "Plan",
    "check_supported",
    "emit_top",
    "instances",
    "param_file",
    "plan",
]
