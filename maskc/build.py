"""The build directory: manifest with content hashes, format version, and safe opening.

A build is written into a temporary folder (:func:`maskc.fsutil.atomic_output_dir`), sealed with
:func:`write_manifest` (sha256 and size of every file, sorted), and renamed into place. Every
consumer opens it with :func:`open_build`, which checks the format version and every hash
before anything is trusted: a missing, extra, truncated or altered file is exit 5.

``manifest.json``::

    {"format": "maskc-build", "version": 1, "maskc_version": "...",
     "stages": ["ingest", "quantize", ...],
     "files": {"<relative path>": {"sha256": "...", "bytes": N}, ...}}

``verify.json``, the one file a build may hold outside its manifest, is the record of a
successful ``maskc verify`` (:func:`write_verify_record`): tied to the sha256 of the
manifest it verified, so it says "verified" only of exactly those files (any change to a file
fails the manifest's hash check; a resealed manifest no longer matches the record)::

    {"format": "maskc-verify", "version": 1, "maskc_version": "...",
     "manifest_sha256": "...", "tiles": N, "checked": [...], "record_sha256": "..."}
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from maskc import __version__
from maskc.errors import InputError, VerifyError
from maskc.fsutil import open_regular
from maskc.ingest.config import read_json_file
from maskc.parallel import usable_cpus

MANIFEST = "manifest.json"
#: manifest.json's size limit: it lists a ROM hash per tile, ~80 bytes a tile (3.8 MB for an
#: 8B model's 47,524 tiles; ~200 MB for 405B), as netlist.json's limit
MAX_MANIFEST_BYTES = 1 << 30
FORMAT = "maskc-build"
VERSION = 1
#: the record of a successful ``maskc verify``, beside the manifest and not in it
VERIFY_RECORD = "verify.json"
VERIFY_FORMAT = "maskc-verify"
#: what ``maskc verify`` checks, as its record lists it
VERIFY_CHECKS = (
    "every via and strap of the layer files decoded and compared with the netlist",
    "the SRAM boot image rebuilt and compared byte for byte",
    "every file's sha256 against the manifest",
    "the manifest's per-tile ROM hashes against the netlist",
)


def sha256_file(path: Path) -> str:
    """The SHA-256 of a regular file (a FIFO or folder is an InputError naming it)."""
    h = hashlib.sha256()
    with open_regular(path, "file") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path: Path, obj: object) -> None:
    """Deterministic JSON: sorted keys, 2-space indent, trailing newline, ASCII only; a NaN or
    an infinity is a ValueError (a bug: JSON has no such numbers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=True, allow_nan=False) + "\n"
    )


def _walk(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            rel = (Path(dirpath) / fn).relative_to(root).as_posix()
            if rel != MANIFEST and rel != VERIFY_RECORD and not rel.startswith(_RECORD_TMP):
                out.append(rel)
    return sorted(out)


def write_manifest(root: Path, stages: list[str], extra: dict | None = None) -> dict:
    """Hash every file under ``root`` and write ``root/manifest.json``; return the manifest."""
    files = {
        rel: {"sha256": sha256_file(root / rel), "bytes": (root / rel).stat().st_size}
        for rel in _walk(root)
    }
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "maskc_version": __version__,
        "stages": list(stages),
        "files": files,
        **(extra or {}),
    }
    write_json(root / MANIFEST, manifest)
    return manifest


@dataclass(frozen=True)
class Build:
    """An opened, hash-checked build directory."""

    path: Path
    manifest: dict

    @property
    def stages(self) -> list[str]:
        return list(self.manifest.get("stages", []))

    def file(self, rel: str) -> Path:
        """Path of a file the manifest lists (InputError if it does not)."""
        if rel not in self.manifest["files"]:
            raise InputError(f"{self.path}: the build has no {rel} (was it compiled that far?)")
        return self.path / rel

    def json(self, rel: str) -> object:
        return read_json_file(self.file(rel), rel, max_bytes=1 << 30)


def is_build(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).is_file()


def open_build(path: str | os.PathLike, check_hashes: bool = True) -> Build:
    """Open ``path`` as a build: format and version checked, then every file's hash (exit 5)."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: not a build folder (no such folder)")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise InputError(f"{path}: not a build folder (no {MANIFEST}); run maskc compile")
    m = read_json_file(mpath, MANIFEST, max_bytes=MAX_MANIFEST_BYTES)
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise InputError(f"{mpath}: not a maskc build manifest")
    if m.get("version") != VERSION:
        raise VerifyError(
            f"{mpath}: build format version {m.get('version')!r}, this maskc reads version "
            f"{VERSION}; recompile with this maskc"
        )
    files = m.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, dict) for k, v in files.items()
    ):
        raise InputError(f"{mpath}: field 'files' must map paths to {{sha256, bytes}}")
    for rel in files:
        p = Path(rel)
        if p.is_absolute() or ".." in p.parts:
            raise InputError(f"{mpath}: file path {rel!r} escapes the build folder")
    _check_claims(mpath, m)
    if check_hashes:
        verify_hashes(path, files)
    return Build(path, m)


#: the stage lists a manifest may record: a compiled build, or a ``--plan-only`` one
STAGE_LISTS = (["ingest", "quantize", "place", "netlist", "layout"], ["plan"])
#: files each stage list promises (a reader relies on them being there)
STAGE_FILES = {"layout": ("netlist/netlist.json", "layers/index.json"), "plan": ()}


def _check_claims(mpath: Path, m: dict) -> None:
    """Every manifest field besides the file hashes is a claim a reader may rely on: check its
    type, and that it agrees with the listed files (the per-tile ROM hashes, derived from the
    tiles, are checked by ``maskc verify``: :func:`maskc.layout.check_tile_hashes`)."""
    stages = m.get("stages")
    if stages not in STAGE_LISTS:
        raise InputError(
            f"{mpath}: field 'stages' is {str(stages)[:80]!r}, not a stage list this maskc "
            "writes; recompile"
        )
    for rel in STAGE_FILES[stages[-1]]:
        if rel not in m["files"]:
            raise InputError(f"{mpath}: stage {stages[-1]!r} is recorded but {rel} is not listed")
    for key, kind in (("maskc_version", str), ("inputs", dict), ("options", dict), ("tiles", dict)):
        if key in m and not isinstance(m[key], kind):
            raise InputError(f"{mpath}: field {key!r} must be a {kind.__name__}")
    for name, h in (m.get("tiles") or {}).items():
        if not (isinstance(h, str) and len(h) == 64 and all(c in "0123456789abcdef" for c in h)):
            raise InputError(f"{mpath}: tiles[{name!r}] is not a sha256 hex digest")


def verify_hashes(root: Path, files: dict) -> None:
    """Compare every file with the manifest; VerifyError listing the first differences. Files
    are hashed on all cores (hashlib releases the GIL), the problems listed in path order."""
    from concurrent.futures import ThreadPoolExecutor

    def check(item) -> str | None:
        rel, want = item
        p = root / rel
        if not p.is_file():
            return f"{rel} is missing"
        if p.stat().st_size != want.get("bytes"):
            return f"{rel} has {p.stat().st_size} bytes, manifest says {want.get('bytes')}"
        if sha256_file(p) != want.get("sha256"):
            return f"{rel} content differs from its manifest sha256"
        return None

    with ThreadPoolExecutor(usable_cpus()) as ex:
        problems = [x for x in ex.map(check, sorted(files.items())) if x is not None]
    extra = sorted(set(_walk(root)) - set(files))
    problems += [f"{rel} is not in the manifest" for rel in extra]
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise VerifyError(f"{root}: build integrity check failed: {'; '.join(problems[:3])}{more}")


#: the temporary name :func:`write_verify_record` writes before renaming
_RECORD_TMP = f".{VERIFY_RECORD}.tmp"


def _record_hash(doc: dict) -> str:
    body = {k: v for k, v in doc.items() if k != "record_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def write_verify_record(root: Path, tiles: int, manifest_sha256: str) -> Path:
    """Record a successful ``maskc verify`` of the build at ``root`` in ``root/verify.json``,
    tied to ``manifest_sha256``, the sha256 of the manifest that was verified; written to a
    temporary file and renamed (atomic). An OSError (a read-only build) is the caller's."""
    root = Path(root)
    doc = {
        "format": VERIFY_FORMAT,
        "version": 1,
        "maskc_version": __version__,
        "manifest_sha256": manifest_sha256,
        "tiles": int(tiles),
        "checked": list(VERIFY_CHECKS),
    }
    doc["record_sha256"] = _record_hash(doc)
    tmp = root / f"{_RECORD_TMP}{os.getpid()}"
    try:
        with open(tmp, "w", encoding="ascii") as f:
            f.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, root / VERIFY_RECORD)
    finally:
        if tmp.exists():
            tmp.unlink()
    return root / VERIFY_RECORD


def verify_status(b: Build) -> dict | None:
    """What the build's ``verify.json`` says, for an opened (hash-checked) build ``b``: None
    without a record; ``{"state": "verified", "tiles", "manifest_sha256", "maskc_version"}``
    when it is intact and records this very manifest; else ``{"state": "stale", "why"}``."""
    p = b.path / VERIFY_RECORD
    if not os.path.lexists(p):
        return None
    try:
        doc = read_json_file(p, VERIFY_RECORD, max_bytes=1 << 16)
    except InputError:
        return {"state": "stale", "why": f"{VERIFY_RECORD} is not readable JSON"}
    ok = (
        isinstance(doc, dict)
        and doc.get("format") == VERIFY_FORMAT
        and isinstance(doc.get("tiles"), int)
        and isinstance(doc.get("manifest_sha256"), str)
        and doc.get("record_sha256") == _record_hash(doc)
    )
    if not ok:
        return {"state": "stale", "why": f"{VERIFY_RECORD} is malformed or was edited"}
    if doc["manifest_sha256"] != sha256_file(b.path / MANIFEST):
        return {"state": "stale", "why": f"{VERIFY_RECORD} records another manifest"}
    return {
        "state": "verified",
        "tiles": doc["tiles"],
        "manifest_sha256": doc["manifest_sha256"],
        "maskc_version": doc.get("maskc_version"),
    }
