"""The netlist's canonical text form (``maskc inspect BUILD --netlist``): one line per fact,
with a SHA-256 of every array and of every tile's ROM content. Two compiles of the same inputs
with the same options print the same text, which tests compare."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from maskc.netlist.loader import FORMAT, Netlist
from maskc.romformat import TILE_FIELDS


def _sha(arr: np.ndarray) -> str:
    a = np.ascontiguousarray(arr)
    h = hashlib.sha256(f"{a.dtype.str}{list(a.shape)}".encode())
    h.update(a.reshape(-1).view(np.uint8).data)
    return h.hexdigest()[:16]


def dump_text(nl: Netlist, tiles: bool = True) -> str:
    """The canonical text form: stable across compiles of the same inputs and options."""
    d = nl.doc
    out = [f"{FORMAT} v{d['version']}"]
    num = {k: v for k, v in d["numerics"].items() if k != "luts"}
    out.append("numerics " + " ".join(f"{k}={num[k]}" for k in sorted(num)))
    a = d["architecture"]
    out.append("architecture " + " ".join(f"{k}={json.dumps(a[k])}" for k in sorted(a)))
    f = d["fabric"]
    out.append(f"fabric {f.get('fabric', {}).get('name')} sha={_sha_json(f)}")
    pl = d["placement"]
    out.append(
        f"placement dies={pl['dies']} grid={pl['grid'][0]}x{pl['grid'][1]} tiles={pl['tiles_used']}"
        + (f" expert_dies={json.dumps(pl['expert_dies'])}" if "expert_dies" in pl else "")
    )
    for k, v in nl.params().items():
        out.append(f"param {k} {v.dtype} {list(v.shape)} sha={_sha(v)}")
    for name in sorted(nl.matrices):
        m = nl.matrices[name]
        fm = m["format"]
        t = nl.tile_arrays(name)
        out.append(
            f"matrix {name} {m['shape'][0]}x{m['shape'][1]} bits={fm['bits']} "
            f"g={fm['group_size']} sym={int(fm['zero_bits'] == 0)} tiles={m['tiles']} "
            f"acc_bits={m['acc_bits']} levels="
            + (str(t["levels"].tolist()) if len(t["levels"]) <= 16 else f"sha={_sha(t['levels'])}")
        )
        if tiles:
            for i in range(m["tiles"]):
                die, x, y = t["pos"][i].tolist()
                r0, nr, c0, nc = t["block"][i].tolist()
                h = hashlib.sha256()
                for k in TILE_FIELDS:
                    if k in t:
                        h.update(np.ascontiguousarray(t[k][i]).view(np.uint8).data)
                out.append(
                    f"  tile d{die} x{x} y{y} rows {r0}+{nr} cols {c0}+{nc} "
                    f"rom={h.hexdigest()[:16]}"
                )
    for i, op in enumerate(nl.ops):
        out.append(f"op {i} {op.text()}")
    s = d["sram"]
    out.append(f"sram context={s['context']} max_context={s['max_context']}")
    for die in s["dies"]:
        kv, ad, pr = die["kv"], die["adapters"], die.get("params")
        out.append(
            f"  die {die['die']} bytes={die['bytes']} "
            + (f"params base={pr['base']} bytes={pr['bytes']} " if pr else "")
            + f"kv base={kv['base']} "
            f"bytes={kv['bytes']} per_token={kv['bytes_per_token']} "
            f"layers={[x['layer'] for x in kv['layers']]} adapters base={ad['base']} "
            f"bytes={ad['bytes']} max_rank={ad['max_rank']}"
        )
    tok = d.get("tokenizer")
    if tok:
        out.append(
            f"tokenizer sha={tok['sha256'][:16]} bos={tok['bos_token_id']} "
            f"eos={tok['eos_token_id']} chat_template="
            f"{'none' if tok['chat_template'] is None else _sha_str(tok['chat_template'])}"
        )
    else:
        out.append("tokenizer none")
    return "\n".join(out) + "\n"


def _sha_json(obj) -> str:
    return _sha_str(json.dumps(obj, sort_keys=True))


def _sha_str(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()[:16]
