"""Chat templates (``chat_template`` of tokenizer_config.json), rendered in a bounded sandbox.

A chat template is a program the model's authors ship: Jinja run on the user's machine. maskc
renders it as Hugging Face does, in jinja2's ``ImmutableSandboxedEnvironment`` (no attribute
starting with ``_``, no mutation of lists and dicts, ``raise_exception`` and ``{% break %}``
available), and adds limits so that no template can crash or hang maskc:

* work: at most :data:`MAX_STEPS` traced steps (Python calls, and lines of the template's own
  code; every loop iteration is at least one) and :data:`MAX_RANGE_ITEMS` items from all its
  ``range()`` calls together, so nested ``range(99999)`` loops are refused at once;
* recursion: at most :data:`MAX_DEPTH` Python frames below the render call (recursive macros);
* size: no string, list or output longer than :func:`size_limit` (1 MiB plus twice the
  messages' length), no integer longer than :data:`MAX_INT_BITS` bits (``**``, ``*``), no
  integer argument beyond :data:`MAX_INT_ARG` to a filter or method (``center(10**9)``), no
  format width of 5 digits or more (``'%999999d'``, ``'{:>99999}'``);
* time: :data:`MAX_SECONDS` of rendering, checked between traced steps (a backstop).

Any failure, a limit or the template's own error (division by zero, ``str + int``, an undefined
name, ``raise_exception``, the sandbox's ``SecurityError``), is an :class:`InputError` (exit 3)
naming the template. ``maskc compile`` renders the template once with :data:`SAMPLE_MESSAGES`,
so a broken template is refused at compile, not met later by ``maskc emulate --chat``.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable

from maskc.errors import InputError

MAX_STEPS = 500_000
MAX_RANGE_ITEMS = 100_000
MAX_DEPTH = 200
MAX_OUTPUT_CHARS = 1 << 20
MAX_INT_BITS = 100_000
MAX_INT_ARG = 1_000_000
MAX_SECONDS = 5.0
#: The conversation ``maskc compile`` renders to test a template: what ``emulate --chat`` sends.
SAMPLE_MESSAGES = ({"role": "user", "content": "Hello! What is 2 + 2?"},)

_WIDE_FORMAT = re.compile(r"%[^a-zA-Z%]*\d{5}|\{[^{}]*:[^{}]*\d{5}")


class _Limit(BaseException):
    """A limit was reached. A BaseException, so that no ``except Exception`` in jinja's runtime
    swallows it (the tracer stops tracing once it raises)."""


def size_limit(messages) -> int:
    """Longest string, list or output a render of ``messages`` may make."""
    return MAX_OUTPUT_CHARS + 2 * sum(len(str(m.get("content", ""))) for m in messages)


class _Budget:
    """The limits of one render; :meth:`trace` is its ``sys.settrace`` function."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self.steps = 0
        self.range_items = 0
        self.deadline = time.monotonic() + MAX_SECONDS
        self.base_depth = _depth(sys._getframe())

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise _Limit(f"more than {MAX_STEPS:,} steps (a loop too long?)")
        if not self.steps & 1023 and time.monotonic() > self.deadline:
            raise _Limit(f"rendering took more than {MAX_SECONDS:g} s")

    def trace(self, frame, event, arg):
        self.step()
        if frame.f_code.co_filename != "<template>":
            return None
        if _depth(frame, self.base_depth + MAX_DEPTH + 1) - self.base_depth > MAX_DEPTH:
            raise _Limit(f"calls nested more than {MAX_DEPTH} deep (recursion?)")
        return self._line

    def _line(self, frame, event, arg):
        if event == "line":
            self.step()
        return self._line

    def size(self, value):
        """``value``, unless it is a string, list or integer beyond the limits."""
        if isinstance(value, int) and not isinstance(value, bool):
            if value.bit_length() > MAX_INT_BITS:
                raise _Limit(f"an integer of more than {MAX_INT_BITS:,} bits")
        elif isinstance(value, str | list | tuple | dict) and len(value) > self.max_chars:
            raise _Limit(f"a value of more than {self.max_chars:,} characters or items")
        return value

    def range(self, *args) -> range:
        r = range(*args)
        self.range_items += len(r)
        if self.range_items > MAX_RANGE_ITEMS:
            raise _Limit(f"range() of more than {MAX_RANGE_ITEMS:,} items in all")
        return r


def _depth(frame, stop: int = 1 << 30) -> int:
    n = 0
    while frame is not None and n < stop:
        frame, n = frame.f_back, n + 1
    return n


def _power_bits(base, exp) -> int:
    """About how many bits ``base ** exp`` has (0 unless both are integers)."""
    if not (isinstance(base, int) and isinstance(exp, int)) or exp <= 0 or abs(base) <= 1:
        return 0
    return exp * (abs(base).bit_length() - 1) + 1


def _check_args(args, kwargs) -> None:
    for a in (*args, *kwargs.values()):
        if isinstance(a, int | float) and not isinstance(a, bool) and abs(a) > MAX_INT_ARG:
            raise _Limit(f"an argument of {str(a)[:20]} (at most {MAX_INT_ARG:,})")


def _wide(fmt) -> None:
    if isinstance(fmt, str) and _WIDE_FORMAT.search(fmt):
        raise _Limit("a format width of 5 digits or more")


def _environment(budget: _Budget):
    from jinja2.compiler import CodeGenerator
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generator(CodeGenerator):
        def visit_Concat(self, node, frame) -> None:  # ``a ~ b``: its result is size-checked
            self.write("environment.maskc_size(")
            super().visit_Concat(node, frame)
            self.write(")")

    class Env(ImmutableSandboxedEnvironment):
        code_generator_class = Generator
        intercepted_binops = frozenset({"+", "*", "**", "%"})

        def call_binop(self, context, operator, left, right):
            if operator == "**" and _power_bits(left, right) > MAX_INT_BITS:
                raise _Limit(f"{str(left)[:20]} ** {str(right)[:20]} is too large")
            for seq, n in ((left, right), (right, left)) if operator == "*" else ():
                seqs = isinstance(seq, str | list | tuple) and isinstance(n, int)
                if seqs and len(seq) * n > budget.max_chars:
                    raise _Limit(f"a repetition of more than {budget.max_chars:,} items")
            if operator == "%":
                _wide(left)
            return budget.size(super().call_binop(context, operator, left, right))

        def call(__self, __context, __obj, *args, **kwargs):
            _check_args(args, kwargs)
            if getattr(__obj, "__name__", "") in ("format", "format_map"):  # jinja < 3.1.5
                _wide(getattr(__obj, "__self__", None))
            return budget.size(super().call(__context, __obj, *args, **kwargs))

        def wrap_str_format(self, value):  # ``'{:>99999}'.format(x)``
            wrapped = super().wrap_str_format(value)
            if wrapped is None:
                return None
            _wide(value.__self__)
            return wrapped

    env = Env(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.maskc_size = budget.size
    env.filters = {k: _bounded(f, budget) for k, f in env.filters.items()}
    env.globals["range"] = budget.range

    def raise_exception(msg):
        from jinja2 import TemplateError

        raise TemplateError(msg)

    env.globals["raise_exception"] = raise_exception
    return env


def _bounded(f: Callable, budget: _Budget) -> Callable:
    """Filter ``f`` with its numeric arguments and its result size-checked (jinja passes the
    environment or context first to some filters: their flag is kept)."""

    first = 2 if hasattr(f, "jinja_pass_arg") else 1  # the value filtered is not checked

    def g(*args, **kwargs):
        _check_args(args[first:], kwargs)
        if f.__name__ == "do_format" and args:
            _wide(args[0])
        return budget.size(f(*args, **kwargs))

    if hasattr(f, "jinja_pass_arg"):
        g.jinja_pass_arg = f.jinja_pass_arg
    g.__name__ = f.__name__
    return g


def render_chat(
    template: str,
    where: str,
    messages=SAMPLE_MESSAGES,
    add_generation_prompt: bool = True,
    **extra,
) -> str:
    """``template`` rendered with ``messages`` under the limits of this module. ``where`` names
    the template in messages ("tokenizer_config.json: chat_template"); every failure is an
    InputError (exit 3)."""
    messages = [dict(m) for m in messages]
    budget = _Budget(size_limit(messages))
    old = sys.gettrace()
    out: list[str] = []
    n = 0
    try:
        env = _environment(budget)
        tmpl = env.from_string(template)
        sys.settrace(budget.trace)
        try:
            for chunk in tmpl.generate(
                messages=messages, add_generation_prompt=add_generation_prompt, **extra
            ):
                n += len(chunk)
                if n > budget.max_chars:
                    raise _Limit(f"an output of more than {budget.max_chars:,} characters")
                out.append(chunk)
        finally:
            sys.settrace(old)
    except _Limit as e:
        raise InputError(f"{where} exceeds a limit: {e}; fix the template") from None
    except (KeyboardInterrupt, SystemExit):
        raise
    except RecursionError:
        raise InputError(f"{where} recurses too deeply; fix the template") from None
    except Exception as e:
        msg = (str(e).strip().splitlines() or [""])[0][:200]
        raise InputError(f"{where} fails: {type(e).__name__}: {msg}; fix the template") from None
    return "".join(out)
