"""Special files and absurd shapes (issue 19, class 4): every input is checked to be a regular
file before it is opened (a FIFO must never block a read), optional files that are something
else are errors, and a declared layer count is checked against the weights before any loop
runs over it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import assert_bad
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maskc.errors import InputError
from maskc.fsutil import check_regular, open_regular, optional_file, read_small_file


def _fifo(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p)
    elif os.path.lexists(p):
        p.unlink()
    os.mkfifo(p)


@pytest.mark.parametrize(
    "kind", ["fifo", "folder", "dangling", "loop", "missing", "socket-like-devnull"]
)
def test_check_regular_names_what_is_there(tmp_path, kind):
    p = tmp_path / "x.json"
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "folder":
        p.mkdir()
    elif kind == "dangling":
        p.symlink_to(tmp_path / "nowhere")
    elif kind == "loop":
        p.symlink_to(p)
    elif kind == "socket-like-devnull":
        p.symlink_to("/dev/null")  # a character device behind a symlink
    want = {
        "fifo": "named pipe",
        "folder": "a folder",
        "dangling": "broken symlink",
        "loop": "symlink loop",
        "missing": "no such file",
        "socket-like-devnull": "character device",
    }[kind]
    with pytest.raises(InputError, match=want):
        check_regular(p, "thing")
    with pytest.raises(InputError, match=want):
        open_regular(p, "thing")
    with pytest.raises(InputError, match=want):
        read_small_file(p, "thing", 100)
    if kind == "missing":
        assert optional_file(p, "thing") is None
    else:
        with pytest.raises(InputError, match=want):
            optional_file(p, "thing")


def test_a_symlink_to_a_regular_file_is_followed(tmp_path):
    (tmp_path / "real.json").write_text("{}")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    assert read_small_file(tmp_path / "link.json", "thing", 10) == b"{}"
    assert optional_file(tmp_path / "link.json", "thing") == tmp_path / "link.json"


@pytest.mark.parametrize(
    "name", ["config.json", "tokenizer_config.json", "model.safetensors", "tokenizer.json"]
)
def test_a_fifo_model_file_is_exit_3_never_a_hang(tiny_copy, cli, name):
    d = tiny_copy()
    _fifo(d / name)
    assert_bad(cli("compile", d, "-o", d.parent / "out", "--no-verify"), name, "fifo")
    assert not (d.parent / "out").exists()


def test_a_fifo_shard_or_index(tiny_copy, cli):
    d = tiny_copy("tiny-sharded")
    shard = sorted(d.glob("model-*.safetensors"))[0]
    _fifo(shard)
    assert_bad(cli("inspect", d), shard.name, "fifo")
    _fifo(d / "model.safetensors.index.json")
    assert_bad(cli("inspect", d), "model.safetensors.index.json", "fifo")


@pytest.mark.parametrize(
    "flag,name",
    [("--config", "quant.toml"), ("--fabric", "fab.toml"), ("--calib", "calib.txt"),
     ("--eval-text", "eval.txt")],
)  # fmt: skip
def test_a_fifo_option_file(model_cache, tmp_path, cli, flag, name):
    _fifo(tmp_path / name)
    args = [flag, tmp_path / name] + (["--bits", "3"] if flag == "--calib" else [])
    r = cli("compile", model_cache("tiny").path, "-o", tmp_path / "out", "--no-verify", *args)
    assert_bad(r, name, "fifo")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_a_fifo_adapter_config(tmp_path, cli):
    ad = tmp_path / "ad"
    ad.mkdir()
    _fifo(ad / "adapter_config.json")
    assert_bad(cli("inspect", ad), "adapter_config.json")


def test_tokenizer_size_cap_and_one_copy(model_cache, tmp_path, cli):
    """tokenizer.json is capped (a sparse 65 MiB file is refused before it is read) and a
    build holds one copy: netlist/tokenizer.json is a hard link to the build's."""
    from maskc.tokenizer import MAX_TOKENIZER_BYTES

    d = tmp_path / "m"
    shutil.copytree(model_cache("tiny").path, d)
    good = (d / "tokenizer.json").read_bytes()
    with open(d / "tokenizer.json", "r+b") as f:
        f.truncate(MAX_TOKENIZER_BYTES + 1)
    assert_bad(cli("inspect", d), "tokenizer.json", "too large")
    (d / "tokenizer.json").write_bytes(good)
    b = tmp_path / "b"
    assert cli("compile", d, "-o", b, "--plan-only").code == 0  # no tokenizer copy needed
    r = cli("compile", d, "-o", tmp_path / "full", "--no-verify")
    assert r.code == 0, r.err
    top, net = (
        tmp_path / "full" / "tokenizer.json",
        tmp_path / "full" / "netlist" / "tokenizer.json",
    )
    assert top.read_bytes() == good and os.path.samefile(top, net)


def _with_layers(src: Path, dst: Path, layers: int) -> Path:
    shutil.copytree(src, dst)
    c = json.loads((dst / "config.json").read_text())
    c["num_hidden_layers"] = layers
    (dst / "config.json").write_text(json.dumps(c))
    return dst


@pytest.mark.parametrize("layers", [3, 1 << 24])
def test_declared_layers_beyond_the_weights(model_cache, tmp_path, cli, layers):
    """More layers declared than the weights hold: the first missing tensor, for inspect,
    compile and --plan-only (which reads the headers when weights are beside the config)."""
    d = _with_layers(model_cache("tiny").path, tmp_path / "m", layers)
    for args in (
        ["inspect", d],
        ["compile", d, "-o", tmp_path / "o", "--no-verify"],
        ["compile", d, "-o", tmp_path / "o", "--plan-only"],
    ):
        assert_bad(cli(*args), "model.layers.2.input_layernorm.weight", f"{layers} layers")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_fewer_layers_declared_than_the_weights_hold(model_cache, tmp_path, cli):
    d = _with_layers(model_cache("tiny").path, tmp_path / "m", 1)
    assert_bad(cli("inspect", d), "unexpected tensor", "model.layers.1.")


def test_a_config_alone_over_max_layers(model_cache, tmp_path, cli):
    """--plan-only of a config without weights: the layer count is bounded before the loops."""
    from maskc.ir import MAX_LAYERS

    d = tmp_path / "c"
    d.mkdir()
    c = json.loads((model_cache("tiny").path / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**c, "num_hidden_layers": 1 << 24}))
    r = cli("compile", d, "-o", tmp_path / "o", "--plan-only")
    assert_bad(r, "config.json", "num_hidden_layers", str(MAX_LAYERS))
    (d / "config.json").write_text(json.dumps({**c, "num_hidden_layers": 40}))
    assert cli("compile", d, "-o", tmp_path / "o", "--plan-only").code == 0


_NAMES = st.lists(
    st.tuples(st.integers(0, 12), st.sampled_from(["input_layernorm", "self_attn.q_proj",
                                                    "mlp.up_proj"])),
    max_size=30,
)  # fmt: skip


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(names=_NAMES, layers=st.sampled_from([0, 1, 2, 5, 13, 1 << 24]))
def test_the_layer_check_names_the_first_missing_tensor(model_cache, names, layers):
    """Property: for any set of tensor names and any declared layer count, the check either
    passes (every expected tensor present) or names exactly the first missing tensor of the
    canonical order, as the full list would."""
    from dataclasses import replace

    from maskc.ingest import load_model
    from maskc.ingest.loader import _expected
    from maskc.ir import expected_tensors

    arch = load_model(model_cache("tiny").path).arch
    if layers == 0:
        return
    arch = replace(arch, num_layers=layers)
    present = {"model.embed_tokens.weight", "model.norm.weight"}
    present |= {f"model.layers.{n}.{m}.weight" for n, m in names}
    try:
        _expected(Path("m"), Path("config.json"), arch, present)
        ok = None
    except InputError as e:
        ok = str(e)
    if layers > 13:  # more layers than any name: named without listing them all
        assert ok is not None and "model.layers." in ok
        first = next(n for n in range(14) if not any(k == n for k, _ in names))
        want = next(
            s.name
            for s in expected_tensors(replace(arch, num_layers=first + 1))
            if s.name not in present
        )
        assert f"{want!r}" in ok
        return
    missing = [s.name for s in expected_tensors(arch) if s.name not in present]
    assert (ok is None) == (not missing)
    if missing:
        assert f"{missing[0]!r}" in ok
