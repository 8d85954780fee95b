"""The static pictures (issue 23): floorplan.png and the diff-layers heatmap zoom to the used
tiles (with the whole die beside them) and draw y = 0 at the top, render labels its tile and
decodes packed 3-bit codes, and quant_error.png keeps every role's series visible. The PNGs
are read back and measured (size, share of coloured pixels, where colours sit), never
compared with golden files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import micro_fabric
from matplotlib import colors, image


def _rgb(path) -> np.ndarray:
    img = image.imread(str(path))
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400, img.shape
    return img[..., :3]


def _near(img: np.ndarray, color, tol: float = 0.06) -> np.ndarray:
    """Pixels within ``tol`` of ``color`` in every channel."""
    return np.abs(img - np.asarray(colors.to_rgb(color))).max(-1) < tol


def _colourful(img: np.ndarray) -> np.ndarray:
    """Pixels that are neither grey, white nor black: the tiles' colours."""
    return img.max(-1) - img.min(-1) > 0.25


@pytest.fixture(scope="module")
def builds(model_cache, tmp_path_factory):
    """The tiny model on the built-in mini fabric (16 of its 5,120 tiles), on the micro fabric
    (128 of 400 tiles), and a copy with one weight of layer 0's q_proj changed (micro)."""
    from safetensors.numpy import load_file, save_file

    from maskc.pipeline import CompileOptions, compile_model

    root = tmp_path_factory.mktemp("pictures")
    fab = micro_fabric(root)
    src = model_cache("tiny").path
    changed = root / "model-b"
    import shutil

    shutil.copytree(src, changed)
    t = load_file(str(changed / "model.safetensors"))
    name = "model.layers.0.self_attn.q_proj.weight"
    t[name] = t[name].copy()
    t[name][:4, :] *= -1.5
    save_file(t, str(changed / "model.safetensors"))
    out = {}
    for key, model, fabric in (("mini", src, "mini"), ("a", src, fab), ("b", changed, fab)):
        out[key] = root / key
        opts = CompileOptions(fabric=fabric, method="rtn", calibrate=False, verify=False)
        compile_model(model, out[key], opts)
    return out


@pytest.mark.slow
def test_floorplan_zooms_to_the_used_tiles_with_the_die_beside(builds):
    img = _rgb(builds["mini"] / "reports" / "floorplan.png")
    # 16 of 5,120 tiles: drawn whole, they were 0.3% of the die's square; zoomed, the
    # tiles' colours fill a good part of the picture
    assert _colourful(img).mean() > 0.15
    # the whole-die inset frames the zoomed region in red
    right = img[:, int(img.shape[1] * 0.8) :]
    frame = (right[..., 0] > 0.8) & (right[..., 1] < 0.55) & (right[..., 2] < 0.55)
    assert frame.sum() > 20


@pytest.mark.slow
def test_floorplan_and_heatmap_draw_y0_at_the_top(builds, cli, tmp_path):
    """The embedding is placed first (tile row 0): its red is above the layers' colours;
    the diff's only changed tiles (layer 0's q_proj, placed right after it) are above the
    unchanged ones."""
    img = _rgb(builds["a"] / "reports" / "floorplan.png")
    rows = np.arange(img.shape[0])[:, None]
    red = _near(img, (0.85, 0.2, 0.2))
    yellow = _near(img, "#fde725", 0.08)  # viridis' top: the last layer
    assert red.sum() > 500 and yellow.sum() > 500
    assert (rows * red).sum() / red.sum() < (rows * yellow).sum() / yellow.sum()

    png = tmp_path / "d.png"
    r = cli("diff-layers", builds["a"], builds["b"], "--png", png)
    assert r.code == 1, r.err
    img = _rgb(png)
    rows = np.arange(img.shape[0])[:, None]
    grey = _near(img, (0.72, 0.72, 0.72), 0.02)  # unchanged used tiles
    changed = _colourful(img) | (img.max(-1) < 0.45)  # magma, light to dark
    changed[:, int(img.shape[1] * 0.72) :] = False  # not the colour bar or the inset
    assert grey.sum() > 2000 and changed.sum() > 100
    assert (rows * changed).sum() / changed.sum() < (rows * grey).sum() / grey.sum()


def test_shared_view_orientation_and_zoom_box():
    from maskc.place import dieview as dv

    tm = dv.tile_map(
        256, 224, 1, [(0, x, 0, "model.embed_tokens.weight", None, "embed") for x in range(40)]
    )
    assert dv.zoom_box(tm) == (0, 42, 0, 2)  # the used tiles and a margin
    full = dv.tile_map(4, 4, 1, [(0, x, y, "t", 0, "q_proj") for x in range(4) for y in range(3)])
    assert dv.zoom_box(full) is None  # most of the die is used: no zoom
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    dv.show_grid(ax, np.zeros((224, 256)), (0, 42, 0, 2))
    top, bottom = ax.get_ylim()[1], ax.get_ylim()[0]
    assert top < bottom  # y = 0 at the top


@pytest.mark.slow
def test_render_labels_the_tile_and_decodes_packed_3bit(model_cache, cli, tmp_path):
    from maskc.pipeline import CompileOptions, compile_model

    b = tmp_path / "b3"
    opts = CompileOptions(bits=3, fabric="mini", calibrate=False, verify=False)
    compile_model(model_cache("tiny").path, b, opts)
    tiles = json.loads(cli("inspect", b, "--tiles", "--json").out)["tiles"]
    three = next(t for t in tiles if t["format"].startswith("int3"))
    four = next(t for t in tiles if t["format"].startswith("int4"))
    for t, left in ((three, "decoded 3-bit codes"), (four, "cell values")):
        png = tmp_path / f"{t['tile']}.png"
        r = cli("render", b, "--tile", t["tile"], "-o", png, "--json")
        assert r.code == 0, r.err
        doc = json.loads(r.out)
        assert doc["tensor"] == t["tensor"] and doc["rows"] == t["rows"]
        assert doc["cols"] == t["cols"] and doc["format"] == t["format"]
        assert doc["left"] == left
        img = _rgb(png)
        assert img.shape[1] > 900 and img.shape[0] > 450
    assert "4 codes in 3 cells" in three["format"]
    # the packed cells of the zoom hold values up to 15, while the decoded codes are 3-bit
    doc = json.loads(
        cli("render", b, "--tile", three["tile"], "-o", tmp_path / "t.png", "--json").out
    )
    assert max(max(r) for r in doc["zoom_values"]) > 7


def test_error_plot_keeps_every_series_visible(tmp_path):
    """gate_proj's SNR equal to up_proj's at every layer (nearly so on SmolLM2): in one
    overlaid plot up_proj, drawn after it, hid it; each role's colour must show about as
    much as any other's."""
    from maskc.quantize.report import ROLES, error_png

    rng = np.random.default_rng(0)
    base = {role: 40 + rng.normal(0, 0.3, 30) for role in ROLES}
    base["up_proj"] = base["gate_proj"]
    tensors = [
        {"quantized": True, "layer": i, "role": role, "snr_db": float(base[role][i])}
        for role in ROLES
        for i in range(30)
    ]
    png = tmp_path / "q.png"
    error_png({"tensors": tensors, "totals": {"bpw_blocks": 4.5}}, png)
    img = _rgb(png)
    shown = {role: int(_near(img, f"C{i}").sum()) for i, role in enumerate(ROLES)}
    assert min(shown.values()) > 0.6 * max(shown.values()), shown
