"""Config validation and documentation for plain dataclasses, by pydantic.

Every config stays a stdlib dataclass, the one place of its defaults and of its ``__post_init__``
checks: the run config's sections (``framecast.config``), the comparison's, each model's
(``framecast/models``). ``build_dataclass`` validates a plain mapping (YAML, ``--section.key
value`` overrides) against one with pydantic (``TypeAdapter``, unknown keys forbidden) and turns
any mistake into one ``ConfigError`` line that names the key, the value and the fix.

``field_help`` reads each field's help text from the source: the ``#`` comment at the end of its
line, else the comment lines directly above it. ``framecast fit --help`` shows it.
"""

import ast
import dataclasses
import functools
import inspect
import io
import json
import textwrap
import tokenize
import types
import typing
from typing import Any

import pydantic

from framecast.errors import ConfigError, did_you_mean

# Lax conversion, as YAML needs: "1e-3" (a string to YAML 1.1) reads as a float, `8.0` as the
# integer 8 and `--trainer.precision 32` (a number to YAML) as the string "32"; unknown keys fail.
PYDANTIC_CONFIG = pydantic.ConfigDict(extra="forbid", coerce_numbers_to_str=True)


def build_dataclass(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Instantiate dataclass ``cls`` from a plain mapping, checking every key and type; errors
    name keys with ``prefix`` (``"model."``) in front."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: expected {describe(cls)}, got {_show(values)}")
    _refuse_booleans(cls, values, (), prefix)
    try:
        return _adapter(cls).validate_python(values)
    except pydantic.ValidationError as e:
        raise _one_line(cls, values, prefix, e.errors()[0]) from None


@functools.cache
def _adapter(cls: type) -> pydantic.TypeAdapter:
    todo, seen = [cls], set()
    while todo:  # the dataclass and every dataclass in its fields' types
        tp = todo.pop()
        if dataclasses.is_dataclass(tp) and tp not in seen:
            seen.add(tp)
            if "__pydantic_config__" not in vars(tp):
                tp.__pydantic_config__ = PYDANTIC_CONFIG  # what pydantic.with_config sets
            todo += typing.get_type_hints(tp).values()
        todo += typing.get_args(tp)
    return pydantic.TypeAdapter(cls)


def _init_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _strip_none(tp: Any) -> Any:
    """``X | None`` -> ``X``; any other type as it is."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        return next(a for a in args if a is not type(None))
    return tp


def _child(tp: Any, part: Any) -> Any:
    """The type of ``part`` (a field name, list index or mapping key) inside type ``tp``, or None
    where ``tp`` does not say (an unknown field, a union of several types)."""
    tp = _strip_none(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return typing.get_type_hints(tp)[part] if part in _init_names(tp) else None
    if origin in (list, tuple) and isinstance(part, int):
        if origin is list or not args or args[-1] is Ellipsis:
            return args[0] if args else Any
        return args[part] if part < len(args) else None
    if origin is dict:
        return args[1] if args else Any
    return None


def _key(prefix: str, loc: tuple) -> str:
    key = prefix.rstrip(".")
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else str(part)
    return key


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value, default=repr)


def _refuse_booleans(tp: Any, value: Any, loc: tuple, prefix: str) -> None:
    """pydantic reads true and false as 1 and 0 where a number is expected: refuse them there."""
    if isinstance(value, bool):
        members = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
        if bool not in members and Any not in members:
            raise ConfigError(f"{_key(prefix, loc)}: expected {describe(tp)}, got {_show(value)}")
    elif isinstance(value, (dict, list, tuple)):
        for part, item in value.items() if isinstance(value, dict) else enumerate(value):
            sub = _child(tp, part)
            if sub is not None:
                _refuse_booleans(sub, item, (*loc, part), prefix)


def _one_line(cls: type, values: dict[str, Any], prefix: str, error: dict[str, Any]) -> Exception:
    """The ``ConfigError`` for pydantic's ``error``: the location it names walked through the
    types of ``cls`` and through ``values`` as far as both go."""
    tp, value, loc = cls, values, ()
    for part in error["loc"]:
        plain = _strip_none(tp)
        if dataclasses.is_dataclass(plain) and part not in _init_names(plain):
            key, names = _key(prefix, (*loc, part)), [_key(prefix, (*loc, n)) for n in _init_names(plain)]
            return ConfigError(f"unknown config key '{key}'{did_you_mean(key, names)}; valid keys: {', '.join(names)}")
        sub = _child(tp, part)
        if isinstance(value, dict):
            found = part in value
        else:
            found = isinstance(value, (list, tuple)) and isinstance(part, int) and part < len(value)
        if sub is None or not found:
            break  # a union's member, or a value missing from a too short list: name the whole
        tp, value, loc = sub, value[part], (*loc, part)
    raised = (error.get("ctx") or {}).get("error")
    if error["type"] == "value_error" and isinstance(raised, Exception):  # from a __post_init__
        if not isinstance(raised, ConfigError):
            return raised  # not a check's message: a bug, which keeps its type and traceback
        return ConfigError(_prefixed(str(raised), _key(prefix, loc)))
    message = f"{_key(prefix, loc) or cls.__name__}: expected {describe(tp)}, got {_show(value)}"
    if typing.get_origin(tp) is typing.Literal:
        message += did_you_mean(str(value), map(str, typing.get_args(tp)))
    return ConfigError(message)


def _prefixed(message: str, key: str) -> str:
    """A check's message with the section's key in front, unless it names it already: ``train.lr
    must be positive`` from section ``models.maxvit.train`` reads ``models.maxvit.train.lr ...``."""
    if not key or message.startswith(key + "."):
        return message
    parts = key.split(".")
    for i in range(1, len(parts)):
        tail = ".".join(parts[i:]) + "."
        if message.startswith(tail):
            return f"{key}.{message[len(tail) :]}"
    return f"{key}.{message}"


_NAMES = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings")}
_NAMES[bool] = ("true or false", "true/false values")


def describe(tp: Any) -> str:
    """A type as a config value's description: ``tuple[int, ...]`` -> ``a list of integers``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin in (list, tuple):
        each = set(a for a in args if a is not Ellipsis)
        plural = _NAMES[next(iter(each))][1] if len(each) == 1 and next(iter(each)) in _NAMES else "values"
        count = f"{len(args)} " if origin is tuple and args and args[-1] is not Ellipsis else ""
        return f"a list of {count}{plural}"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(_show, args))
    if dataclasses.is_dataclass(tp):
        return f"a mapping of {tp.__name__} keys"
    if origin is dict or tp is dict:
        return "a mapping"
    return "null" if tp is type(None) else "any value" if tp is Any else _NAMES.get(tp, (str(tp),))[0]


def type_label(tp: Any) -> str:
    """A type as ``--help`` shows it: ``int``, ``float | null``, ``[int, ...]``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_label(a) for a in args)
    if origin in (list, tuple):
        return (
            "["
            + ", ".join("..." if a is Ellipsis else type_label(a) for a in args)
            + (", ...]" if origin is list else "]")
        )
    if origin is typing.Literal:
        return "|".join(map(str, args))
    if origin is dict or tp is dict:
        return "mapping"
    return "null" if tp is type(None) else "any" if tp is Any else getattr(tp, "__name__", str(tp))


@functools.cache
def field_help(cls: type) -> dict[str, str]:
    """Each field of dataclass ``cls`` -> its help text: the ``#`` comment at the end of its line,
    else the comment lines directly above it (joined); ``""`` where there is none."""
    found: dict[str, str] = {}
    for base in reversed(cls.__mro__[1:]):  # inherited fields first
        if dataclasses.is_dataclass(base):
            found.update(field_help(base))
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # defined where no source file is (an interactive session)
        source = ""
    comments, alone = {}, set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
            if not tok.line[: tok.start[1]].strip():
                alone.add(tok.start[0])  # a comment line of its own
    for node in ast.parse(source).body[0].body if source else []:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            lines = range(node.lineno, (node.end_lineno or node.lineno) + 1)
            text = [comments[n] for n in lines if n in comments and n not in alone]
            if not text:  # no comment at the end of the line: the comment lines above it
                above = node.lineno - 1
                while above in alone:
                    text.insert(0, comments[above])
                    above -= 1
            found[node.target.id] = " ".join(text)
    return {f.name: found.get(f.name, "") for f in dataclasses.fields(cls)}
