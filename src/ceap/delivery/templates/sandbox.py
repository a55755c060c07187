"""The template sandbox: Jinja2's immutable sandbox with limits on the size of
what a template builds and on how long it renders."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2 import filters as jfilters
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_eval_context

from ceap.errors import CeapError

#: largest string or list any one step of a render may build (characters or items)
MAX_VALUE = 1_000_000
#: largest width or precision a format specification may ask for
MAX_WIDTH = 10_000


class TemplateError(CeapError):
    """A template cannot be loaded or rendered; the message names the file and part."""


class RenderTimeout(TemplateError):
    pass


# -- the sandbox -----------------------------------------------------------------


def _too_big(n: int) -> None:
    if n > MAX_VALUE:
        raise SecurityError(f"a value of {n} characters or items is over the render limit ({MAX_VALUE})")


def _checked(value: Any) -> Any:
    if isinstance(value, str | list | tuple | bytes | dict):
        _too_big(len(value))
    return value


_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_BRACE = re.compile(r"\{[^{}]*?:([^{}]*)\}")


def _check_format(fmt: str, printf: bool) -> None:
    if printf:
        for match in _PRINTF.finditer(fmt):
            for group in match.groups():
                if group == "*" or (group and int(group) > MAX_WIDTH):
                    raise SecurityError("format width or precision over the render limit")
    else:
        if re.search(r"\{[^{}]*:[^{}]*\{", fmt):
            raise SecurityError("nested format specifications are not allowed in templates")
        for match in _BRACE.finditer(fmt):
            if any(int(n) > MAX_WIDTH for n in re.findall(r"\d+", match.group(1))):
                raise SecurityError("format width or precision over the render limit")


def _f_center(value: Any, width: int = 80) -> str:
    _too_big(int(width))
    return jfilters.do_center(value, width)


def _f_indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    size = width if isinstance(width, int) else len(str(width))
    _too_big(len(str(s)) + (str(s).count("\n") + 1) * int(size))
    return jfilters.do_indent(s, width, first, blank)


@pass_eval_context
def _f_join(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    items = list(value)
    _too_big(len(items))
    _too_big(len(d) * len(items) + sum(len(str(x)) for x in items))
    return jfilters.sync_do_join(eval_ctx, items, d, attribute)


@pass_eval_context
def _f_replace(eval_ctx: Any, s: str, old: str, new: str, count: int | None = None) -> str:
    text = str(s)
    hits = (len(text) + 1) if old == "" else text.count(str(old))
    if count is not None and count >= 0:
        hits = min(hits, count)
    _too_big(len(text) + hits * max(len(str(new)) - len(str(old)), 0))
    return jfilters.do_replace(eval_ctx, s, old, new, count)


def _f_format(value: str, *args: Any, **kwargs: Any) -> str:
    _check_format(str(value), printf=True)
    return _checked(jfilters.do_format(value, *args, **kwargs))


def _f_wordwrap(environment: Any, s: str, width: int = 79, break_long_words: bool = True,
                wrapstring: str | None = None, break_on_hyphens: bool = True) -> str:
    breaks = len(str(s)) // max(int(width), 1) + 1
    _too_big(len(str(s)) + breaks * len(wrapstring or "\n"))
    return jfilters.do_wordwrap(environment, s, width, break_long_words, wrapstring, break_on_hyphens)


_f_wordwrap.jinja_pass_arg = jfilters.do_wordwrap.jinja_pass_arg  # type: ignore[attr-defined]


def _f_batch(value: Iterable[Any], linecount: int, fill_with: Any = None) -> Any:
    _too_big(int(linecount))
    return jfilters.do_batch(value, linecount, fill_with)


def _f_slice(value: Any, slices: int, fill_with: Any = None) -> Any:
    _too_big(int(slices))
    return jfilters.sync_do_slice(value, slices, fill_with)


_STR_WIDTH = {"center", "ljust", "rjust", "zfill"}


class _Codegen(CodeGenerator):
    """Wraps every ``~`` concatenation in a size check."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked(")
        super().visit_Concat(node, frame)
        self.write(")")


class SafeEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus limits on the size of what a template builds."""

    code_generator_class = _Codegen
    intercepted_binops = frozenset({"*", "**", "+"})

    def __init__(self, autoescape: bool):
        super().__init__(undefined=StrictUndefined, autoescape=autoescape, trim_blocks=True,
                         lstrip_blocks=True)
        for name in ("lipsum", "cycler", "joiner"):
            self.globals.pop(name, None)
        self.filters.update(center=_f_center, indent=_f_indent, join=_f_join, replace=_f_replace,
                            format=_f_format, wordwrap=_f_wordwrap, batch=_f_batch, slice=_f_slice)

    @staticmethod
    def checked(value: Any) -> Any:
        return _checked(value)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int) and right > 64 and not (isinstance(left, int | float)
                                                               and abs(left) <= 1):
                raise SecurityError("exponent over the render limit")
        elif operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int):
                    _too_big(len(seq) * n)
        elif operator == "+" and isinstance(left, str | list | tuple) and \
                isinstance(right, str | list | tuple):
            _too_big(len(left) + len(right))
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str):
            if name in _STR_WIDTH and args and isinstance(args[0], int):
                _too_big(args[0])
            elif name == "replace" and len(args) >= 2:
                old, new = str(args[0]), str(args[1])
                hits = (len(owner) + 1) if old == "" else owner.count(old)
                _too_big(len(owner) + hits * max(len(new) - len(old), 0))
            elif name == "expandtabs":
                tab = int(args[0]) if args else 8
                _too_big(len(owner) * max(tab, 1))
            elif name == "join" and args:
                items = list(args[0])
                _too_big(len(owner) * len(items) + sum(len(str(x)) for x in items))
                args = (items, *args[1:])
        return _checked(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        fn = super().wrap_str_format(value)
        if fn is None:
            return None
        fmt = str(value.__self__)

        def checked_format(*args: Any, **kwargs: Any) -> str:
            _check_format(fmt, printf=False)
            return _checked(fn(*args, **kwargs))

        return checked_format


class Deadline:
    """Line-level tracing of the template's own code, so a runaway loop stops
    after ``seconds``. Skipped when another tracer (a debugger, coverage) is active."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = 0.0
        self.n = 0

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        self.n += 1
        if self.n & 0xFF == 0 and time.monotonic() > self.end:
            raise RenderTimeout(f"rendering took longer than {self.seconds:g} s")
        return self._local

    def _global(self, frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename.startswith("<template"):
            return self._local
        return None

    def run(self, fn: Callable[[], str]) -> str:
        if sys.gettrace() is not None:
            return fn()
        self.end, self.n = time.monotonic() + self.seconds, 0
        sys.settrace(self._global)
        try:
            return fn()
        finally:
            sys.settrace(None)

