"""The model's tokenizer.json: validated before use, every call of the ``tokenizers`` library
contained and bounded (:func:`open_tokenizer` -> :class:`ModelTokenizer`).

The ``tokenizers`` library is Rust: a bad tokenizer.json can make it *panic* (pyo3's
``PanicException`` is a ``BaseException``, and Rust prints the panic and a backtrace on the
process's stderr), and a regex of the file (a ``Split`` pre-tokenizer, a ``Replace`` normalizer
or decoder) can backtrack catastrophically on some text. So:

* :func:`check_document` refuses, naming tokenizer.json and the field, what can be checked
  (exit 3): a model type the library does not know; an ``unk_token`` (WordLevel, WordPiece,
  BPE) or ``unk_id`` (Unigram) that is not in the vocabulary; BPE ``dropout`` (tokenization
  would be random); ``truncation`` whose ``stride`` is not below ``max_length`` less the
  special tokens the post-processor adds (the library panics on it); ``padding`` whose
  ``pad_to_multiple_of`` is 0. Valid truncation and padding are then switched off, as
  transformers does: maskc never cuts a prompt or a text.
* every call is contained: an exception or a panic of the library is an InputError naming
  tokenizer.json; what the panic printed on stderr is dropped (one line, never a traceback).
* a tokenizer whose regexes are all in :data:`KNOWN_PATTERNS` (those of GPT-2, Llama 3 and
  Qwen2; the ByteLevel, Digits, Whitespace, Metaspace... pre-tokenizers have no regex of the
  file) runs in the process. Any other regex makes encode and decode run in a child process
  (``python -c``, started once per tokenizer, ~50 ms) that is killed after
  :func:`time_limit` seconds (:data:`WORKER_SECONDS` plus :data:`SECONDS_PER_CHAR` per
  character or token): the library does not release the GIL in ``encode``, so nothing short
  of a process can be stopped. Oniguruma, the library's regex engine, also stops one match
  after 10 million backtracking steps, which the library turns into a panic: contained too.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from maskc.errors import InputError
from maskc.fsutil import read_small_file
from maskc.textparse import ParseError, json_loads

#: Largest tokenizer.json accepted, in bytes (real ones are under 40 MB: Llama 3's is 9 MB).
MAX_TOKENIZER_BYTES = 64 << 20
MODEL_TYPES = ("BPE", "WordPiece", "WordLevel", "Unigram")
#: Regexes that run in the process: the pre-tokenizer patterns of GPT-2, Llama 3 and Qwen2.
KNOWN_PATTERNS = frozenset(
    {
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
        r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
        r"|\s*[\r\n]+|\s+(?!\S)|\s+",
    }
)
#: Time a call in the child process always gets, and what it gets more per character or token.
WORKER_SECONDS = 10.0
SECONDS_PER_CHAR = 1e-5
#: A text that every working tokenizer encodes (with the rendered chat template) at compile.
SAMPLE_TEXT = "Hello, world! The year 2024 had 366 days.\n  Indented\ttab, ünïcödé, 日本語."


def time_limit(n: int) -> float:
    """Seconds a call in the child process may take on a text of ``n`` characters or tokens."""
    return WORKER_SECONDS + SECONDS_PER_CHAR * n


def _field_error(path: Path, field: str, what: str) -> InputError:
    return InputError(f"{path}: {field} {what}")


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def regexes(doc: dict) -> list[str]:
    """Every regex of the document (``"pattern": {"Regex": ...}`` in its normalizer,
    pre-tokenizer, post-processor and decoder), in document order."""
    out: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            pat = node.get("pattern")
            if isinstance(pat, dict) and isinstance(pat.get("Regex"), str):
                out.append(pat["Regex"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        walk(doc.get(key))
    return out


def check_document(path: Path, doc: object) -> None:
    """Refuse (InputError naming ``path`` and the field) what the library would panic on or
    misbehave with; see the module's docstring. The library's own load checks the rest."""
    if not isinstance(doc, dict):
        raise InputError(f"{path}: not a tokenizer.json (not a JSON object)")
    model = doc.get("model")
    if not isinstance(model, dict):
        raise _field_error(path, "model", "is missing or not an object")
    kind = model.get("type")
    if kind is not None and kind not in MODEL_TYPES:
        raise _field_error(path, "model.type", f"{str(kind)[:40]!r} is not one of {MODEL_TYPES}")
    vocab = model.get("vocab")
    has_unk = isinstance(vocab, dict) and "unk_token" in model
    if kind in ("WordLevel", "WordPiece", "BPE") and has_unk:
        unk = model["unk_token"]
        if (unk is not None or kind != "BPE") and (not isinstance(unk, str) or unk not in vocab):
            raise _field_error(
                path, "model.unk_token", f"{str(unk)[:40]!r} is not in the vocabulary; add it"
            )
    if kind == "Unigram" and isinstance(vocab, list):
        unk_id = model.get("unk_id")
        if unk_id is not None and not (_int(unk_id) and 0 <= unk_id < len(vocab)):
            raise _field_error(path, "model.unk_id", f"{str(unk_id)[:40]} is not in the vocabulary")
    dropout = model.get("dropout")
    if kind == "BPE" and dropout not in (None, 0, 0.0):
        raise _field_error(
            path, "model.dropout", f"is {str(dropout)[:20]}: tokenization would be random; set null"
        )
    trunc = doc.get("truncation")
    if trunc is not None:
        if not isinstance(trunc, dict):
            raise _field_error(path, "truncation", "is not an object or null")
        for k in ("max_length", "stride"):
            if not (_int(trunc.get(k)) and trunc[k] >= 0):
                raise _field_error(path, f"truncation.{k}", "must be a non-negative integer")
    pad = doc.get("padding")
    if pad is not None:
        if not isinstance(pad, dict):
            raise _field_error(path, "padding", "is not an object or null")
        multiple = pad.get("pad_to_multiple_of")
        if multiple is not None and not (_int(multiple) and multiple >= 1):
            raise _field_error(path, "padding.pad_to_multiple_of", "must be null or at least 1")


def _check_truncation(path: Path, doc: dict, tok) -> None:
    """``stride`` below ``max_length`` less the special tokens added (the library asserts it
    when it truncates: a panic)."""
    trunc = doc.get("truncation")
    if trunc is None:
        return
    pp = tok.post_processor
    added = 0 if pp is None else max(pp.num_special_tokens_to_add(b) for b in (False, True))
    if trunc["stride"] + added >= trunc["max_length"]:
        raise _field_error(
            path,
            "truncation.stride",
            f"{trunc['stride']} must be below truncation.max_length {trunc['max_length']}"
            + (f" less the {added} special tokens added" if added else "")
            + " (or set truncation to null)",
        )


_QUIET: list = []  # one temporary file per process, for what Rust prints on stderr


@contextmanager
def _stderr_captured() -> Iterator[list[bool]]:
    """Route file descriptor 2 to a temporary file for the duration; give it back afterwards
    unless the body set ``flag[0]`` (a panic: what Rust printed is dropped)."""
    if not _QUIET:
        _QUIET.append(tempfile.TemporaryFile())  # noqa: SIM115 (kept open for the process)
    tmp = _QUIET[0]
    tmp.seek(0)
    tmp.truncate()
    flag = [False]
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no stderr at all
        yield flag
        return
    os.dup2(tmp.fileno(), 2)
    try:
        yield flag
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        if not flag[0] and tmp.tell():
            tmp.seek(0)
            os.write(2, tmp.read())


def _contained(path: Path, what: str, fn, *args):
    """``fn(*args)``: an exception or panic of the library is an InputError naming ``path``."""
    with _stderr_captured() as panicked:
        try:
            return fn(*args)
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except BaseException as e:  # PanicException derives from BaseException
            panicked[0] = True
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise _library_error(path, what, msg) from None


def _library_error(path: Path, what: str, msg: str) -> InputError:
    hint = (
        " (a Split or Replace regex of tokenizer.json backtracks catastrophically on this text)"
        if "retry-limit" in msg
        else ""
    )
    return InputError(f"{path}: the tokenizer fails {what}: {msg}{hint}")


_WORKER = """
import json, sys
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
tok.no_truncation()
tok.no_padding()
for line in sys.stdin.buffer:
    op, arg = json.loads(line)
    try:
        if op == "encode":
            out = {"ok": tok.encode(arg, add_special_tokens=False).ids}
        else:
            out = {"ok": tok.decode(arg, skip_special_tokens=False)}
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:
        out = {"error": ((str(e).strip().splitlines() or [type(e).__name__])[0])[:200]}
    sys.stdout.buffer.write(json.dumps(out).encode() + b"\\n")
    sys.stdout.buffer.flush()
"""


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for f in (proc.stdin, proc.stdout):
        if f is not None:
            f.close()


class _Worker:
    """The child process that runs a tokenizer with an unknown regex; killed on a time-out."""

    def __init__(self, path: Path) -> None:
        env = {**os.environ, "RUST_BACKTRACE": "0", "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self.path = path
        self.buf = b""
        self._finalizer = weakref.finalize(self, _kill, self.proc)

    def close(self) -> None:
        self._finalizer()

    def call(self, op: str, arg, seconds: float):
        deadline = time.monotonic() + seconds
        try:
            self.proc.stdin.write(json.dumps([op, arg]).encode() + b"\n")
            self.proc.stdin.flush()
            line = self._line(deadline)
        except BaseException:
            self.close()
            raise
        if line is None:
            self.close()
            if self.proc.returncode not in (None, -9):
                raise InputError(
                    f"{self.path}: the tokenizer's process stopped (exit "
                    f"{self.proc.returncode}) on this text"
                )
            raise InputError(
                f"{self.path}: tokenizing took more than {seconds:.0f} s, the limit; a regex of "
                "this tokenizer.json (Split or Replace pattern) backtracks catastrophically on "
                "this text"
            )
        reply = json.loads(line)
        if "error" in reply:
            raise _library_error(self.path, f"to {op} the text", reply["error"])
        return reply["ok"]

    def _line(self, deadline: float) -> bytes | None:
        """The next reply line; None when the child ended or the deadline passed (killed)."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.close()
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line


class ModelTokenizer:
    """A validated tokenizer.json; :meth:`encode` and :meth:`decode` never add special tokens,
    never truncate, and fail only with InputError naming the file."""

    def __init__(self, path: Path, tok, patterns: list[str]) -> None:
        self.path = path
        self.tok = tok
        #: the regexes not in KNOWN_PATTERNS: calls then run in a child process
        self.unknown_patterns = [p for p in patterns if p not in KNOWN_PATTERNS]
        self._worker: _Worker | None = None

    @property
    def isolated(self) -> bool:
        return bool(self.unknown_patterns)

    def vocab(self) -> dict[str, int]:
        return _contained(self.path, "to list its vocabulary", self.tok.get_vocab, True)

    def encode(self, text: str) -> list[int]:
        if self.isolated:
            return list(self._call("encode", text, len(text)))
        enc = _contained(self.path, "to encode the text", self._encode, text)
        return list(enc.ids)

    def _encode(self, text: str):
        return self.tok.encode(text, add_special_tokens=False)

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        ids = [int(i) for i in ids]
        if self.isolated:
            return self._call("decode", ids, len(ids))
        return _contained(self.path, "to decode the tokens", self._decode, ids)

    def _call(self, op: str, arg, n: int):
        if self._worker is None or self._worker.proc.poll() is not None:
            self._worker = _Worker(self.path)
        return self._worker.call(op, arg, time_limit(n))

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None


def open_tokenizer(path: Path) -> ModelTokenizer:
    """tokenizer.json at ``path``: size-capped, parsed by the guarded parser, checked
    (:func:`check_document`) and loaded by the library, contained (InputError, exit 3)."""
    from tokenizers import Tokenizer  # imported lazily: only needed when a tokenizer exists

    raw = read_small_file(path, "tokenizer.json", MAX_TOKENIZER_BYTES)
    try:
        doc = json_loads(raw)
    except ParseError as e:
        raise InputError(f"{path}: not a valid tokenizer.json ({e.detail})") from None
    check_document(path, doc)
    tok = _contained(path, "to load", Tokenizer.from_str, raw.decode("utf-8"))
    _check_truncation(path, doc, tok)
    tok.no_truncation()
    tok.no_padding()
    return ModelTokenizer(path, tok, regexes(doc))
