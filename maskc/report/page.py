"""The report's HTML: one self-contained page (inline CSS, SVG and a little plain JavaScript;
no network, no fonts, no timestamps). Every string from a build is escaped (:func:`esc`)."""

from __future__ import annotations

from maskc.report.svg import (
    change_colour,
    die_map,
    esc,
    heat,
    layer_colour,
    line_chart,
)

CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222}
header{background:#23324a;color:#fff;padding:12px 20px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0}nav a{color:#cfe0ff;margin-right:14px}
main{padding:0 20px 40px;max-width:1400px}section{margin-top:22px}
h2{font-size:17px;border-bottom:2px solid #23324a;padding-bottom:3px}h3{font-size:15px}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ccc;padding:2px 7px;
text-align:left;vertical-align:top}th{background:#eef1f6}td.n,th.n{text-align:right;
font-variant-numeric:tabular-nums}table.kv th{width:15em}
.die{margin:10px 0;border:1px solid #ccc;padding:6px}.diehead button{margin-left:8px}
.diebody{display:flex;gap:12px;align-items:flex-start}
.scroll{max-width:min(1000px,75vw);overflow-x:auto;border:1px solid #ddd}
svg.map{display:block;background:#fafafa}
svg.inset{width:200px;height:200px;border:1px solid #ddd;background:#fff}
.dieface{fill:#e6e6e6}.tile{stroke:#fff;stroke-width:.06}.tile:hover{stroke:#000;
stroke-width:.2}.insettiles{fill:#23324a}.view{fill:none;stroke:#d00;stroke-width:1%;
vector-effect:non-scaling-stroke}.lbl{fill:#fff;stroke:#000;stroke-width:.08;paint-order:
stroke;font-weight:bold;text-anchor:middle;dominant-baseline:central;pointer-events:none}
.unch{fill:#b8b8b8}
.legend span{display:inline-block;margin:2px 8px 2px 0}.sw{display:inline-block;width:12px;
height:12px;vertical-align:-1px;margin-right:3px;border:1px solid #999}
#tip{position:fixed;z-index:10;background:#fffbe6;border:1px solid #555;padding:3px 6px;
font-size:12px;max-width:560px;pointer-events:none;box-shadow:1px 1px 4px #0004}
#tip[hidden]{display:none}
.chart .plotbg{fill:#fbfbfb;stroke:#999}.chart .grid{stroke:#e0e0e0}.chart .tick{font-size:11px}
.chart .axis{font-size:12px}.note{color:#555}.bad{color:#b00;font-weight:bold}
.good{color:#080;font-weight:bold}
"""

JS = """
(function(){
var tip=document.getElementById('tip');
function isTile(t){return t&&t.classList&&t.classList.contains('tile');}
document.addEventListener('mouseover',function(e){
 if(!isTile(e.target))return;var ti=e.target.querySelector('title');
 tip.textContent=ti?ti.textContent:'';tip.hidden=false;place(e);});
document.addEventListener('mousemove',function(e){if(!tip.hidden)place(e);});
document.addEventListener('mouseout',function(e){if(isTile(e.target))tip.hidden=true;});
function place(e){tip.style.left=(e.clientX+14)+'px';tip.style.top=(e.clientY+14)+'px';}
function parse(s){return s.split(' ').map(Number);}
function setView(map,v){map.setAttribute('viewBox',v.join(' '));
 var r=map.closest('.die').querySelector('.inset .view');
 if(r){r.setAttribute('x',v[0]);r.setAttribute('y',v[1]);r.setAttribute('width',v[2]);
 r.setAttribute('height',v[3]);}}
var dies=document.querySelectorAll('.die');
for(var i=0;i<dies.length;i++)(function(d){
 var map=d.querySelector('svg.map');
 d.querySelector('.zin').addEventListener('click',function(){
  setView(map,parse(map.getAttribute('data-used')));});
 d.querySelector('.zout').addEventListener('click',function(){
  setView(map,parse(map.getAttribute('data-whole')));});
 map.addEventListener('wheel',function(e){if(e.shiftKey)return;e.preventDefault();
  var v=parse(map.getAttribute('viewBox')),w=parse(map.getAttribute('data-whole'));
  var b=map.getBoundingClientRect(),f=e.deltaY>0?1.25:0.8;
  var s=Math.max(v[2]/b.width,v[3]/b.height);
  var cx=v[0]+v[2]/2+(e.clientX-b.left-b.width/2)*s,cy=v[1]+v[3]/2+(e.clientY-b.top-b.height/2)*s;
  var nw=Math.min(w[2],Math.max(4,v[2]*f)),nh=Math.min(w[3],Math.max(4,v[3]*f));
  var nx=Math.min(Math.max(0,cx-(cx-v[0])*nw/v[2]),w[2]-nw);
  var ny=Math.min(Math.max(0,cy-(cy-v[1])*nh/v[3]),w[3]-nh);
  setView(map,[nx,ny,nw,nh]);},{passive:false});
})(dies[i]);
})();
"""


def _n(v, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, int) or digits == 0:
        return f"{round(v):,}"
    return f"{v:,.{digits}f}"


def _g(v, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}g}"


def _kv(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _table(head: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    """``rows`` are already escaped cells (numbers formatted, strings through esc)."""
    th = "".join(
        f"<th{' class=n' if i in numeric else ''}>{esc(h)}</th>" for i, h in enumerate(head)
    )
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=n' if i in numeric else ''}>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def summary(d: dict) -> str:
    q, p, m, fab = d["quant"], d["placement"], d["model"], d["fabric"]
    tot = q.get("totals", {})
    perf = p.get("performance", {})
    c1 = perf.get("at_context_1", {})
    cn = perf.get("at_context", {})
    lay = q.get("layers") or {}
    rows = [
        (
            "model",
            f"{esc(m['architecture'])} ({esc(m['model_type'])}): {_n(m['layers'])} layers, "
            f"hidden {_n(m['hidden'])}, vocabulary {_n(m['vocab'])}",
        ),
        (
            "fabric",
            f"{esc(fab['name'])}: {esc(fab['description'])} ({esc(fab['process'])}); "
            f"{fab['columns']} x {fab['rows']} tiles per die",
        ),
        (
            "bits per weight",
            f"{_g(tot.get('bpw_blocks'))} in the decoder blocks, {_g(tot.get('bpw_quantized'))} "
            f"over all {_n(tot.get('quantized_parameters'))} quantized weights (scales "
            f"included); {_n(tot.get('float_parameters'))} float parameters",
        ),
        (
            "tiles",
            f"{_n(p.get('tiles_used'))} of {_n(p.get('tiles_available'))} "
            f"({100 * p.get('tiles_used', 0) / max(1, p.get('tiles_available', 1)):.2f}%)",
        ),
        ("dies", f"{_n(p.get('dies'))}"),
    ]
    for die in p.get("per_die", []):
        rows.append(
            (
                f"SRAM die {die['die']}",
                f"{_n(die.get('sram_bytes'))} bytes = params {_n(die.get('params_bytes'))} + KV "
                f"cache {_n(die.get('kv_bytes'))} ({_n(die.get('kv_bytes_per_token'))} per "
                f"token, {_n(p.get('context_requested'))} tokens) + adapters "
                f"{_n(die.get('adapter_bytes'))}",
            )
        )
    for label, at in (("context 1", c1), (f"context {_n(cn.get('context'))}", cn)):
        if not at:
            continue
        rows.append(
            (
                f"modeled, {label}",
                f"{_n(at.get('tokens_per_s_per_user'))} tokens/s per user; latency "
                f"{_g(at.get('latency_us'))} us and energy {_g(at.get('energy_mj_per_token'))} "
                "mJ per token",
            )
        )
    if lay:
        files = lay.get("files") or {}
        per = []
        for kind in ("via", "metal"):
            fs = sorted((f, b) for f, b in files.items() if f.startswith(kind))
            if fs:
                per.append(
                    f"{kind}: {_n(sum(b for _, b in fs))} bytes in {len(fs)} file"
                    f"{'s' if len(fs) > 1 else ''}"
                )
        listing = "".join(f"<li>{esc(f)}: {_n(b)} bytes</li>" for f, b in sorted(files.items()))
        rows.append(
            (
                "layer files",
                f"{esc(lay.get('format'))}; {'; '.join(per)}; "
                f"{_n(lay.get('bytes', {}).get('total'))} bytes in all, "
                f"{_g(lay.get('bytes_per_weight'))} bytes/weight; KLayout: "
                "<code>klayout layers/via.* -l layers/maskc.lyp</code>"
                f"<details><summary>every file</summary><ul>{listing}</ul></details>",
            )
        )
        rows.append(("verify status", _verify(d, lay)))
    nlr = q.get("netlist") or {}
    if nlr:
        rows.append(
            (
                "netlist",
                f"{_n(nlr.get('matrices'))} matrices in {_n(nlr.get('tiles'))} tiles, "
                f"{_n(nlr.get('weights'))} weights, {_n(nlr.get('bytes'))} bytes",
            )
        )
    rows.append(
        (
            "build",
            f"{_n(d['manifest']['bytes'])} bytes in {_n(d['manifest']['files'])} files; "
            f"maskc {esc(d['manifest']['maskc_version'])}; stages "
            f"{esc(', '.join(d['manifest']['stages']))}",
        )
    )
    warn = q.get("warnings") or []
    if warn:
        rows.append(("warnings", "<br>".join(esc(w) for w in warn)))
    return _kv(rows)


def _verify(d: dict, lay: dict) -> str:
    """``maskc verify``'s record (verify.json), else what the compile checked."""
    v = d.get("verify")
    hashes = (
        f"every file's hash matches manifest.json ({_n(d['manifest']['files'])} files, "
        "checked when this report was made)"
    )
    if v and v["state"] == "verified":
        return (
            f'<span class="good">verified by maskc verify</span> ({_n(v["tiles"])} tiles '
            "decoded and compared with the netlist, the boot image and every hash; the record "
            f"matches this manifest); {hashes}"
        )
    if v:
        return (
            f'<span class="bad">verification record is stale</span>: {esc(v["why"])}; run '
            f"<code>maskc verify BUILD</code>; {hashes}"
        )
    if lay.get("verified"):
        return (
            '<span class="good">layer files read back and checked against the netlist by the '
            f"compile</span>; {hashes}; <code>maskc verify BUILD</code> checks everything again"
        )
    return (
        '<span class="bad">not verified yet</span>: the compile did not read the layer files '
        f"back; run <code>maskc verify BUILD</code>; {hashes}"
    )


def _tile_class(t: dict) -> str:
    return layer_colour(t["layer"], t["role"])


def floorplan(d: dict) -> str:
    fab = d["fabric"]
    per: dict = {}
    for t in d["tiles"]:
        per.setdefault(t["die"], []).append(t)
    layers = sorted({t["layer"] for t in d["tiles"] if t["layer"] is not None})
    roles = sorted({t["role"] for t in d["tiles"] if t["layer"] is None})
    legend = [
        f'<span><i class="sw" style="background:{layer_colour(None, r)}"></i>{esc(r)}</span>'
        for r in roles
    ] + [
        f'<span><i class="sw" style="background:{layer_colour(ly, None)}"></i>L{ly}</span>'
        for ly in layers
    ]
    parts = [
        '<p class="note">Each square is a tile; hover one for its tensor, layer, role, format '
        "and block. The view starts zoomed to the used area (the inset shows the whole die, "
        "the red frame the view); the mouse wheel zooms (shift+wheel scrolls sideways), the "
        "buttons go back. Labels: decoder layer "
        "L<i>n</i> (the layer's tiles are one band), embed / lm_head.</p>",
        f'<p class="legend">{"".join(legend)}</p>',
    ]
    n_dies = max(per, default=-1) + 1
    dies = d["placement"].get("dies", n_dies)
    for die in range(max(dies, n_dies)):
        parts.append(die_map(die, fab["columns"], fab["rows"], per.get(die, []), _tile_class))
    return "\n".join(parts)


def errors(d: dict) -> str:
    tensors = [t for t in d["quant"].get("tensors", []) if t.get("quantized")]
    if not tensors:
        return '<p class="empty">no quantized tensors</p>'
    # (layer, role) -> errors: one tensor, or a mixture of experts' one per expert (averaged)
    acc: dict = {}
    for t in tensors:
        if t.get("layer") is not None and t.get("rel_error") is not None:
            acc.setdefault((t["role"], t["layer"]), []).append(100 * t["rel_error"])
    roles: dict = {}
    for (role, layer), v in sorted(acc.items()):
        roles.setdefault(role, []).append((layer, sum(v) / len(v)))
    several = any(len(v) > 1 for v in acc.values())
    order = [r for r in _ROLE_ORDER if r in roles] + sorted(set(roles) - set(_ROLE_ORDER))
    chart = line_chart({r: roles[r] for r in order}, "relative error (%)", "layer")
    lrows = [
        [
            str(r["layer"]),
            _n(r["tensors"]),
            _n(r["weights"]),
            _g(r["bpw"]),
            f"{100 * r['mean_rel_error']:.3f}",
            f"{100 * r['max_rel_error']:.3f}",
            esc(r["worst"]),
            _g(r["min_snr_db"]),
        ]
        for r in d["layer_errors"]
    ]
    ltab = _table(
        [
            "layer",
            "tensors",
            "weights",
            "bits/weight",
            "mean rel. error %",
            "max rel. error %",
            "worst tensor",
            "min SNR dB",
        ],
        lrows,
        {0, 1, 2, 3, 4, 5, 7},
    )
    # layer x role: every tensor's error at a glance
    grid = ""
    if roles:
        vals = [v for s in roles.values() for _, v in s]
        lo, hi = min(vals), max(vals)
        cells = {(ly, r): v for r, s in roles.items() for ly, v in s}
        layers = sorted({ly for ly, _ in cells})
        body = []
        for ly in layers:
            row = [f"<th>{ly}</th>"]
            for r in order:
                v = cells.get((ly, r))
                row.append(
                    '<td class="n">-</td>'
                    if v is None
                    else f'<td class="n" style="background:{heat(v, lo, hi)}">{v:.3f}</td>'
                )
            body.append("<tr>" + "".join(row) + "</tr>")
        head = "".join(f"<th>{esc(r)}</th>" for r in order)
        grid = (
            "<h3>Relative error (%) per tensor: layer x role"
            + (" (the mean over a layer's experts where a role has several)" if several else "")
            + "</h3>"
            f"<table><thead><tr><th>layer</th>{head}</tr></thead><tbody>{''.join(body)}"
            "</tbody></table>"
        )
    trows = [
        [
            esc(t["name"]),
            "-" if t.get("layer") is None else str(t["layer"]),
            esc(t.get("role")),
            esc("x".join(map(str, t.get("shape", [])))),
            _n(t.get("bits")),
            _n(t.get("group_size")),
            esc(t.get("method")),
            _g(t.get("bpw")),
            "-" if t.get("rel_error") is None else f"{100 * t['rel_error']:.3f}",
            _g(t.get("snr_db")),
        ]
        for t in tensors
    ]
    ttab = _table(
        [
            "tensor",
            "layer",
            "role",
            "shape",
            "bits",
            "group",
            "method",
            "bits/weight",
            "rel. error %",
            "SNR dB",
        ],
        trows,
        {1, 4, 5, 7, 8, 9},
    )
    return (
        '<p class="note">Relative error: the Frobenius norm of (dequantized - float) over that '
        "of the float weights, per tensor (reports/quant.json). Each role is one line with its "
        "own colour, dash and marker, shifted a little sideways so coinciding lines stay "
        "visible; hover a point for its value.</p>"
        + chart
        + "<h3>Per layer</h3>"
        + ltab
        + grid
        + f"<details><summary>All {len(tensors):,} quantized tensors</summary>{ttab}</details>"
    )


_ROLE_ORDER = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def output(d: dict) -> str:
    o = d["quant"].get("output")
    if not o:
        return (
            '<p class="note">Not measured: the build records no output-level comparison '
            "(reports/quant.json has no <code>output</code>).</p>"
        )
    ratio = o["ppl_quantized"] / o["ppl_float"] if o.get("ppl_float") else None
    return (
        '<p class="note">The quantized model against the float model on the compile\'s report '
        "text (the compile's own measurement, reports/quant.json).</p>"
        + _kv(
            [
                ("tokens", _n(o.get("tokens"))),
                ("mean KL divergence", f"{_g(o.get('kl_mean'))} nats"),
                ("max KL divergence", f"{_g(o.get('kl_max'))} nats"),
                ("top-1 agreement", f"{100 * o.get('top1_agreement', 0):.2f}%"),
                ("perplexity, float", _g(o.get("ppl_float"), 6)),
                ("perplexity, quantized", _g(o.get("ppl_quantized"), 6)),
                ("ratio", "-" if ratio is None else f"{ratio:.4f}x"),
            ]
        )
    )


def budget(d: dict) -> str:
    rows = d["budget"]
    if not rows:
        return '<p class="note">The netlist records no SRAM plan.</p>'
    dies = [x["die"] for x in rows[0]["dies"]]
    head = ["KV-cache tokens"]
    for die in dies:
        head += [f"die {die}: KV bytes", f"die {die}: adapter bytes", f"die {die}: LoRA rank"]
    body = []
    for r in rows:
        tag = " (build)" if r["build"] else ""
        tag += " (max)" if r["max"] else ""
        cells = [f"{_n(r['context'])}{tag}"]
        for x in r["dies"]:
            rk = x["max_rank"]
            cells += [
                _n(x["kv_bytes"]),
                _n(x["adapter_bytes"]),
                f"{rk['all']} all 7 / {rk['attention']} q,k,v,o",
            ]
        body.append(cells)
    s = d["sram"]
    return (
        f'<p class="note">Each die\'s SRAM holds the params (boot image), the KV cache of its '
        "layers and, in what is left, LoRA adapters (docs/sram.md). The build's context is "
        f"{_n(s['context'])} tokens; at most {_n(s['max_context'])} fit"
        f" ({_n(s.get('reserved_for_adapters'))} bytes reserved for adapters). At run time "
        "<code>maskc emulate --context N</code> picks another split; the ranks below are "
        "what <code>maskc/sram.py</code> allows at each.</p>"
        + _table(head, body, set(range(1, len(head))))
    )


def diff(dd: dict) -> str:
    doc = dd["doc"]
    parts = [
        f"<p><b>{esc(doc['a'])}</b> &rarr; <b>this build</b>: {esc(doc['verdict'])}</p>",
    ]
    info = dd["tile_info"]
    for layer in doc["layers"]:  # via, then metal (maskc.diff.LAYERS)
        changed = dd["tiles"].get(layer, {})
        rep = doc["layers"].get(layer, {})
        top = max(changed.values(), default=1)
        sites = [info[s] for s in dd["sites"] if s in info]
        per: dict = {}
        for t in sites:
            per.setdefault(t["die"], []).append(t)

        def fill(t, changed=changed, top=top):
            n = changed.get(t["tile"])
            return "unch" if not n else change_colour(n, top)

        def extra(t, changed=changed, layer=layer):
            return f" | {changed.get(t['tile'], 0):,} {layer} shapes changed"

        parts.append(
            f"<h3>{esc(layer)} mask: {_n(rep.get('added'))} added, {_n(rep.get('removed'))} "
            f"removed, {_n(rep.get('changed_tiles'))} of {_n(rep.get('total_tiles'))} tiles "
            "changed</h3>"
        )
        for die in sorted(per):
            parts.append(
                die_map(
                    die,
                    dd["columns"],
                    dd["rows"],
                    per[die],
                    fill,
                    extra,
                    labels=True,
                    caption=f"; {esc(layer)} changes (grey: unchanged; yellow 1 to dark red "
                    f"{top:,} shapes)"
                    if changed
                    else f"; no {esc(layer)} changes (grey: unchanged)",
                )
            )
        tens = rep.get("top_tensors", [])
        if tens:
            parts.append(
                _table(
                    ["tensor", "changed tiles", f"{layer} shapes changed"],
                    [
                        [esc(t["tensor"]), _n(t["changed_tiles"]), _n(t["vias_or_straps"])]
                        for t in tens
                    ],
                    {1, 2},
                )
            )
        else:
            parts.append(f'<p class="note">No tensor changed on the {esc(layer)} mask.</p>')
    boot = doc.get("boot")
    if boot and not boot["identical"]:
        parts.append(
            "<p>SRAM boot image entries that differ (new boot firmware, no respin): "
            + esc(", ".join(boot["changed"]))
            + "</p>"
        )
    return "\n".join(parts)


SECTIONS = (
    ("summary", "Summary"),
    ("floorplan", "Floorplan"),
    ("errors", "Quantization error per tensor and per layer"),
    ("output", "Output-level metrics"),
    ("budget", "Adapter and context budget"),
    ("diff", "Change map"),
)


def render(d: dict, dd: dict | None) -> tuple[str, list[str]]:
    """The page and the ids of its sections."""
    body = {
        "summary": summary(d),
        "floorplan": floorplan(d),
        "errors": errors(d),
        "output": output(d),
        "budget": budget(d),
    }
    if dd is not None:
        body["diff"] = diff(dd)
    ids = [k for k, _ in SECTIONS if k in body]
    nav = "".join(f'<a href="#{k}">{esc(t)}</a>' for k, t in SECTIONS if k in body)
    secs = "".join(
        f'<section id="{k}"><h2>{esc(t)}</h2>\n{body[k]}\n</section>\n'
        for k, t in SECTIONS
        if k in body
    )
    m = d["model"]
    title = f"maskc build report: {d['name']}"
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n"
        f"<header><h1>{esc(title)}</h1><p>{esc(m['architecture'])} on fabric "
        f"{esc(d['fabric']['name'])}, written by maskc {esc(d['manifest']['maskc_version'])}"
        f"</p><nav>{nav}</nav></header>\n<main>\n{secs}</main>\n"
        '<div id="tip" role="tooltip" hidden></div>\n'
        f"<script>{JS}</script>\n</body></html>\n"
    )
    return page, ids
