"""Per-tensor quantization settings: built-in defaults, ``--config quant.toml`` and CLI flags.

Every quantizable tensor gets one :class:`QuantSetting`. Where each field comes from:

**Precedence** (lowest first; a later level overrides an earlier one field by field)::

    transformer-block matrices:  builtin  <  [defaults]  <  CLI flags  <  [[rule]]s (in order)
    embed_tokens / lm_head / routers:  builtin_embed                   <  [[rule]]s (in order)

``[defaults]`` and the CLI flags (``--bits``, ``--group-size``, ``--method``) apply to the
transformer-block matrices only (q, k, v, o, gate, up, down, and a mixture of experts' expert
and shared-expert gate/up/down); the embedding, an untied ``lm_head`` and a mixture's router
and shared-expert gate (:data:`maskc.ir.ROUTER_ROLES`: small matrices whose outputs choose and
weight the experts) keep ``builtin_embed`` (their own, usually wider, built-in setting) unless a
rule matches them. Rules are the most specific level, so they win over everything.

**Rules** are applied in file order; each matching rule overrides only the fields it sets, so a
later matching rule overrides an earlier one field by field (``bits`` from rule 3, ``method``
from rule 1, ...). Rule *N* is the *N*-th ``[[rule]]`` table of the file, counting from 1.

**Matching**: a rule matches a tensor when its ``match`` regex (Python :mod:`re` syntax) matches
the *whole* of the tensor's module name -- the tensor name with a trailing ``.weight`` removed,
e.g. ``model.layers.1.mlp.down_proj`` -- or the whole full name (``re.fullmatch`` on either).
So ``model\\.layers\\.1\\.mlp\\.down_proj`` matches layer 1 only (not 11, not 1x), and a pattern
that spells out ``\\.weight`` also works. A bias ``...q_proj.bias`` is never matched by a
pattern for its module ``...q_proj`` (``.bias`` is not stripped); it is not quantized anyway.

**Quantized tensors**: only matrices (roles in :data:`QUANTIZABLE_ROLES`); norms and biases are
never quantized and rules matching them are ignored for them.

**Diagnostics** (returned in :attr:`Resolution.warnings`, one line each, naming the file):

* a rule that matches no tensor, or matches only norms/biases ("dead" rule);
* a rule that has no effect: every tensor it matches has every field it sets overridden by a
  later rule (also dead);
* a rule that overrides an earlier rule's value of a field with a different value, for some
  tensors (not an error: file order defines the result).

With ``strict=True`` dead rules are errors (exit 3); overrides stay warnings.

The TOML schema (unknown keys anywhere are errors)::

    [defaults]              # optional; block matrices only; any setting key below
    bits = 3
    [[rule]]                # zero or more, applied in order
    match = 'model\\.layers\\.(0|29)\\.mlp\\.down_proj'   # required regex
    bits = 4                # any subset of the setting keys; at least one

Setting keys and their valid values are those of :class:`QuantSetting`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from maskc.errors import InputError, UsageError
from maskc.ir import EXPERT_ROLES, ROUTER_ROLES, SHARED_EXPERT_ROLES, TensorSpec
from maskc.romformat import FORMAT_KINDS
from maskc.tomlio import read_toml, show_value

#: Tensor roles (:attr:`maskc.ir.TensorSpec.role`) that are quantized; everything else
#: (norms, biases) stays in float.
QUANTIZABLE_ROLES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    *EXPERT_ROLES,
    *SHARED_EXPERT_ROLES,
    *ROUTER_ROLES,
    "embed",
    "lm_head",
)
#: Roles that take ``builtin_embed`` rather than ``builtin`` + ``[defaults]`` + CLI flags.
EMBED_ROLES = ("embed", "lm_head", *ROUTER_ROLES)

#: Valid ``bits``: 8 is stored as two 4-bit cells.
BITS = (2, 3, 4, 8)
#: ``group_size``: any positive multiple of this, up to :data:`MAX_GROUP_SIZE`.
GROUP_SIZE_MULTIPLE = 8
MAX_GROUP_SIZE = 4096
#: ``scale_bits``: inclusive range.
SCALE_BITS_RANGE = (4, 16)

#: Size caps on the config file (it is untrusted input).
MAX_CONFIG_BYTES = 1 << 20
MAX_RULES = 4096
MAX_PATTERN_CHARS = 1000

#: Names shown for tensors in one warning before "...".
_SHOW_TENSORS = 3


@dataclass(frozen=True)
class QuantSetting:
    """How one tensor is quantized. The single source of truth for the setting fields.

    * ``bits``: code width, one of :data:`BITS` (8 = two 4-bit cells);
    * ``group_size``: weights per scale group along the input dimension, a positive multiple of
      :data:`GROUP_SIZE_MULTIPLE` up to :data:`MAX_GROUP_SIZE`;
    * ``method``: quantization algorithm; valid names are given by the caller (``methods``);
    * ``codebook``: per-tensor non-uniform levels instead of a uniform grid;
    * ``symmetric``: levels symmetric around zero (no per-group offset);
    * ``scale_bits``: width of each stored group scale, in :data:`SCALE_BITS_RANGE`;
    * ``skip``: leave the tensor in float (the other fields are then unused);
    * ``format``: the ROM format kind, one of :data:`maskc.romformat.FORMAT_KINDS`: ``"int"``
      (integer levels, the fields above) or an FP4 format (``"mxfp4"``, ``"nvfp4"``), which
      fixes bits, group size and symmetry itself (:func:`maskc.quantize.profiles.resolve_settings`).
      Left out of :meth:`to_json` when ``"int"``, so integer settings read and hash as before.
    """

    bits: int
    group_size: int
    method: str
    codebook: bool
    symmetric: bool
    scale_bits: int
    skip: bool = False
    format: str = "int"

    @staticmethod
    def field_names() -> tuple[str, ...]:
        """The setting keys, in declaration order (also the TOML keys of a setting)."""
        return tuple(f.name for f in fields(QuantSetting))

    @staticmethod
    def check_value(key: str, value: Any, methods: tuple[str, ...] | None = None) -> str | None:
        """Why ``value`` is not valid for field ``key`` (a phrase), or ``None`` if it is.

        ``methods`` ``None`` checks only that ``method`` is a non-empty string.
        """
        if key in ("codebook", "symmetric", "skip"):
            return (
                None
                if isinstance(value, bool)
                else f"must be true or false, got {show_value(value)}"
            )
        if key == "method":
            if not isinstance(value, str) or not value:
                return f"must be a method name (a string), got {show_value(value)}"
            if methods is not None and value not in methods:
                return f"unknown method {value!r}; choose one of: {', '.join(methods)}"
            return None
        if key == "format":
            if value not in FORMAT_KINDS:
                return f"must be one of {', '.join(FORMAT_KINDS)}, got {show_value(value)}"
            return None
        if key not in ("bits", "group_size", "scale_bits"):
            raise ValueError(f"QuantSetting has no field {key!r}")
        if not isinstance(value, int) or isinstance(value, bool):
            return f"must be an integer, got {show_value(value)}"
        if key == "bits" and value not in BITS:
            return f"must be one of {', '.join(map(str, BITS))}, got {value}"
        if key == "group_size" and not (
            0 < value <= MAX_GROUP_SIZE and value % GROUP_SIZE_MULTIPLE == 0
        ):
            return (
                f"must be a positive multiple of {GROUP_SIZE_MULTIPLE} up to {MAX_GROUP_SIZE} "
                f"(e.g. 32, 64, 128), got {value}"
            )
        lo, hi = SCALE_BITS_RANGE
        if key == "scale_bits" and not lo <= value <= hi:
            return f"must be in {lo}..{hi}, got {value}"
        return None

    def validate(
        self, where: str = "quant setting", methods: tuple[str, ...] | None = None
    ) -> None:
        """Raise :class:`InputError` naming ``where`` and the first invalid field."""
        for key in self.field_names():
            problem = self.check_value(key, getattr(self, key), methods)
            if problem:
                raise InputError(f"{where}: {key} {problem}")

    def check_quantizable(self, where: str) -> None:
        """Raise :class:`InputError` naming ``where`` when the fields, each valid, combine into
        a setting no quantizer makes: a codebook with gptq or with a symmetric format."""
        if self.codebook and not self.skip and (self.method == "gptq" or self.symmetric):
            raise InputError(
                f"{where}: codebook = true works with methods rtn and lsq and asymmetric "
                "formats, not with gptq or symmetric = true"
            )

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (declaration order; ``format`` only when not
        ``"int"``)."""
        d = asdict(self)
        if d["format"] == "int":
            del d["format"]
        return d


@dataclass(frozen=True)
class Rule:
    """One ``[[rule]]`` table: a regex and the fields it sets.

    ``index`` counts from 1 in file order; ``overrides`` holds ``(field, value)`` pairs in
    :meth:`QuantSetting.field_names` order.
    """

    index: int
    match: str
    overrides: tuple[tuple[str, Any], ...]
    pattern: re.Pattern[str] = field(compare=False, repr=False)

    def matches(self, name: str) -> bool:
        """Whether the regex fully matches ``name`` or ``name`` minus a trailing ``.weight``."""
        module = name.removesuffix(".weight")
        return bool(self.pattern.fullmatch(module) or self.pattern.fullmatch(name))

    @property
    def label(self) -> str:
        """``rule N (match '...')`` for messages."""
        return f"rule {self.index} (match {_pattern(self.match)})"

    def to_json(self) -> dict[str, Any]:
        """``{"index", "match", "set": {field: value}}``."""
        return {"index": self.index, "match": self.match, "set": dict(self.overrides)}


@dataclass(frozen=True)
class Resolution:
    """The outcome of :func:`resolve`.

    ``settings`` maps every quantizable tensor name (canonical order of the specs) to its
    setting; ``applied`` maps it to the indices of the rules that matched it, in order;
    ``warnings`` are one-line messages naming the config file, for the CLI to print.
    """

    settings: dict[str, QuantSetting]
    warnings: list[str]
    rules: list[Rule]
    defaults: dict[str, Any] = field(default_factory=dict)
    cli: dict[str, Any] = field(default_factory=dict)
    applied: dict[str, tuple[int, ...]] = field(default_factory=dict)
    config_name: str | None = None
    config_sha256: str | None = None
    #: the warnings without the ``<file>: `` prefix (``to_json`` uses these: path-independent)
    warning_bodies: list[str] = field(default_factory=list, repr=False)
    #: per tensor, the level that set each field it did not take from the built-in (0):
    #: 1 ``[defaults]``, 2 the command line, ``2 + N`` rule N (higher is more specific)
    levels: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)

    @property
    def skipped(self) -> list[str]:
        """Quantizable tensors left in float by ``skip = true``, in canonical order."""
        return [n for n, s in self.settings.items() if s.skip]

    def to_json(self) -> dict[str, Any]:
        """A deterministic JSON-ready dict for BUILD files and reports.

        Independent of where the config file lives (only its name and SHA-256 are recorded).
        """
        return {
            "precedence": "blocks: builtin < [defaults] < cli < rules; "
            "embed/lm_head/routers: builtin_embed < rules",
            "config": None
            if self.config_name is None
            else {"file": self.config_name, "sha256": self.config_sha256},
            "defaults": dict(self.defaults),
            "cli": dict(self.cli),
            "rules": [r.to_json() for r in self.rules],
            "tensors": [
                {"name": n, **s.to_json(), "rules": list(self.applied.get(n, ()))}
                for n, s in self.settings.items()
            ],
            "skipped": self.skipped,
            "warnings": list(self.warning_bodies),
        }


# --------------------------------------------------------------------------- loading


def _pattern(pat: str) -> str:
    """A regex as written in the TOML file: a literal string ``'...'`` when possible."""
    return f"'{pat}'" if "'" not in pat and pat.isprintable() else json.dumps(pat)


def _toml_value(value: Any) -> str:
    """``value`` as it would be written in TOML (for warnings)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def _check_table(
    table: Any, where: str, allowed: tuple[str, ...], methods: tuple[str, ...] | None
) -> dict[str, Any]:
    """Validate one TOML table of setting keys (plus ``match`` for a rule); return it ordered."""
    if not isinstance(table, dict):
        raise InputError(f"{where}: must be a table, got {show_value(table)}")
    for key in table:
        if key not in allowed:
            raise InputError(
                f"{where}: unknown key {key!r}; valid keys: {', '.join(sorted(allowed))}"
            )
    out = {}
    for key in QuantSetting.field_names():
        if key in table:
            problem = QuantSetting.check_value(key, table[key], methods)
            if problem:
                raise InputError(f"{where}: {key} {problem}")
            out[key] = table[key]
    return out


def _read_toml(path: Path) -> tuple[dict[str, Any], bytes]:
    """Parse ``path`` (size-capped, UTF-8, TOML) into a dict; every failure is exit 3."""
    return read_toml(path, "quant config", MAX_CONFIG_BYTES, "--config takes a TOML file")


def _parse(
    doc: dict[str, Any], path: Path, methods: tuple[str, ...] | None
) -> tuple[dict[str, Any], list[Rule]]:
    setting_keys = QuantSetting.field_names()
    for key in doc:
        if key not in ("defaults", "rule"):
            raise InputError(
                f"{path}: unknown top-level key {key!r}; valid keys: defaults, rule "
                "(write [defaults] and [[rule]] tables)"
            )
    defaults = _check_table(doc.get("defaults", {}), f"{path}: [defaults]", setting_keys, methods)
    tables = doc.get("rule", [])
    if not isinstance(tables, list):
        raise InputError(f"{path}: 'rule' must be an array of tables; write each as [[rule]]")
    if len(tables) > MAX_RULES:
        raise InputError(f"{path}: {len(tables)} rules is too many (max {MAX_RULES})")
    rules = []
    for i, table in enumerate(tables, start=1):
        where = f"{path}: rule {i}"
        values = _check_table(table, where, ("match", *setting_keys), methods)
        if "match" not in table:
            raise InputError(f"{where}: missing key 'match' (a regex for the tensor names)")
        pat = table["match"]
        if not isinstance(pat, str) or not pat:
            raise InputError(
                f"{where}: match must be a non-empty regex string, got {show_value(pat)}"
            )
        if len(pat) > MAX_PATTERN_CHARS:
            raise InputError(f"{where}: match is too long (max {MAX_PATTERN_CHARS} characters)")
        try:
            compiled = re.compile(pat)
        except re.error as e:
            raise InputError(f"{where}: match {_pattern(pat)} is not a valid regex: {e}") from None
        if not values:
            raise InputError(
                f"{where}: sets no field; add one of: {', '.join(setting_keys)} or remove the rule"
            )
        rules.append(Rule(i, pat, tuple(values.items()), compiled))
    return defaults, rules


def load_rules(
    path: Path, methods: tuple[str, ...] | None = None
) -> tuple[dict[str, Any], list[Rule]]:
    """Read and validate a quant config: ``([defaults] fields, rules in file order)``.

    Raises :class:`InputError` (exit 3) for a missing or unreadable file, bad TOML (with its
    line), an unknown key (naming the table and listing the valid keys), a value of the wrong
    type or range, a missing ``match``, a bad regex, or a rule that sets nothing. ``methods``
    ``None`` accepts any method name (:func:`resolve` checks it against the caller's list).
    An empty file is valid (no defaults, no rules).
    """
    path = Path(path)
    doc, _ = _read_toml(path)
    return _parse(doc, path, methods)


# --------------------------------------------------------------------------- resolving


def _check_cli(cli: dict[str, Any] | None, methods: tuple[str, ...]) -> dict[str, Any]:
    """The given (non-``None``) CLI overrides, validated; a bad value is a UsageError."""
    out = {}
    names = QuantSetting.field_names()
    for key, value in (cli or {}).items():
        if key not in names:
            raise ValueError(f"resolve(): cli key {key!r} is not a QuantSetting field")
        if value is None:
            continue
        problem = QuantSetting.check_value(key, value, methods)
        if problem:
            raise UsageError(f"--{key.replace('_', '-')}: {problem}")
        out[key] = value
    return {k: out[k] for k in names if k in out}


def _names(tensors: list[str]) -> str:
    shown = ", ".join(tensors[:_SHOW_TENSORS])
    return shown + (", ..." if len(tensors) > _SHOW_TENSORS else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def resolve(
    specs: list[TensorSpec],
    cli: dict[str, Any] | None,
    config_path: Path | None,
    builtin: QuantSetting,
    builtin_embed: QuantSetting,
    methods: tuple[str, ...],
    strict: bool = False,
) -> Resolution:
    """Each quantizable tensor's :class:`QuantSetting` (see the module docstring for precedence).

    ``specs``: the model's tensors (canonical order, e.g. :func:`maskc.ir.expected_tensors`);
    ``cli``: ``{field: value or None}`` from the command line (``None`` = flag not given);
    ``config_path``: the ``--config`` TOML or ``None``; ``builtin`` / ``builtin_embed``: the
    built-in settings of block matrices / of the embedding and lm_head; ``methods``: the valid
    method names. ``strict`` turns dead rules (matching nothing, only norms/biases, or entirely
    overridden) into an :class:`InputError`.

    Raises :class:`InputError` for a bad config, :class:`UsageError` for a bad CLI value and
    :class:`ValueError` for a caller bug (invalid built-ins, unknown ``cli`` key).
    """
    methods = tuple(methods)
    if not methods:
        raise ValueError("resolve(): methods must not be empty")
    for name, b in (("builtin", builtin), ("builtin_embed", builtin_embed)):
        try:
            b.validate(f"resolve(): {name}", methods)
        except InputError as e:
            raise ValueError(str(e)) from None
    given = _check_cli(cli, methods)
    defaults: dict[str, Any] = {}
    rules: list[Rule] = []
    prefix, config_name, sha = "", None, None
    if config_path is not None:
        config_path = Path(config_path)
        doc, raw = _read_toml(config_path)
        defaults, rules = _parse(doc, config_path, methods)
        prefix, config_name = f"{config_path}: ", config_path.name
        sha = hashlib.sha256(raw).hexdigest()

    block_base = replace(builtin, **defaults)
    block_base = replace(block_base, **given)

    settings: dict[str, QuantSetting] = {}
    applied: dict[str, tuple[int, ...]] = {}
    matched_any: dict[int, list[str]] = {r.index: [] for r in rules}  # every tensor
    matched_q: dict[int, list[str]] = {r.index: [] for r in rules}  # quantizable only
    last_setter: dict[str, dict[str, int]] = {}
    levels: dict[str, dict[str, int]] = {}
    # (earlier rule, later rule, field, old value, new value) -> tensors
    conflicts: dict[tuple[int, int, str, Any, Any], list[str]] = {}
    for spec in specs:
        hits = [r for r in rules if r.matches(spec.name)]
        for r in hits:
            matched_any[r.index].append(spec.name)
        if spec.role not in QUANTIZABLE_ROLES:
            continue
        embed = spec.role in EMBED_ROLES
        values = (builtin_embed if embed else block_base).to_json()
        level = {} if embed else {**dict.fromkeys(defaults, 1), **dict.fromkeys(given, 2)}
        setter: dict[str, int] = {}
        for r in hits:
            matched_q[r.index].append(spec.name)
            for key, value in r.overrides:
                level[key] = 2 + r.index
                prev = setter.get(key)
                if prev is not None and values[key] != value:
                    conflicts.setdefault((prev, r.index, key, values[key], value), []).append(
                        spec.name
                    )
                values[key] = value
                setter[key] = r.index
        settings[spec.name] = QuantSetting(**values)
        applied[spec.name] = tuple(r.index for r in hits)
        last_setter[spec.name] = setter
        levels[spec.name] = level

    bodies: list[str] = []
    dead: list[str] = []
    for r in rules:
        problem = None
        if not matched_any[r.index]:
            problem = f"{r.label} matches no tensor"
        elif not matched_q[r.index]:
            problem = (
                f"{r.label} matches no quantizable tensor, only norms/biases, which are never "
                f"quantized: {_names(matched_any[r.index])}"
            )
        elif all(
            last_setter[t][key] != r.index for t in matched_q[r.index] for key, _ in r.overrides
        ):
            problem = (
                f"{r.label} has no effect: every tensor it matches has every field it sets "
                "overridden by later rules"
            )
        if problem:
            dead.append(problem)
            bodies.append(problem)
        # conflicts were recorded in canonical tensor order: deterministic
        for (prev, idx, key, old, new), tensors in conflicts.items():
            if idx == r.index:
                bodies.append(
                    f"rule {idx} overrides rule {prev}'s {key}={_toml_value(old)} with "
                    f"{key}={_toml_value(new)} for {_plural(len(tensors), 'tensor')}: "
                    f"{_names(tensors)}"
                )
    if strict and dead:
        more = f" (and {_plural(len(dead) - 1, 'more dead rule')})" if len(dead) > 1 else ""
        raise InputError(f"{prefix}{dead[0]}{more}; fix or remove it (strict mode)")

    return Resolution(
        settings=settings,
        warnings=[prefix + b for b in bodies],
        rules=rules,
        defaults=defaults,
        cli=given,
        applied=applied,
        config_name=config_name,
        config_sha256=sha,
        warning_bodies=bodies,
        levels=levels,
    )
