"""Flags, environment variables and help from one declaration per setting: the config dataclass itself.

The naming rule, with no exceptions: a field is the flag ``--`` + prefix + its name with ``_`` as ``-``
(``drain_delay_s`` is ``--drain-delay-s``), and its environment variable is the component's prefix + the
flag in upper case with ``-`` as ``_`` (``RINGSERVE_DRAIN_DELAY_S``). A field whose value is a config
dataclass is an argument group, and the prefix its flags take is declared once, on that field
(``retry: RetryConfig = setting(RetryConfig(), prefix="retry-")`` makes ``budget_s`` ``--retry-budget-s``);
prefixes of nested groups add up. So every field has a flag, and no flag is spelled twice.

A field's annotation gives the flag's type: ``int``, ``float``, ``str``, ``Path``, an ``Enum`` (its values
are the choices), ``bool`` (``--x`` / ``--no-x``), ``X | None`` (an empty value is None), an ``int``
named ``*_bytes`` (a size: ``256M``, ``1G``). ``setting(parse=...)`` reads any other type. A
``tuple[Config, ...]`` with ``each=`` is a repeated flag (comma-separated in the environment), each value
filling the fields named in ``fills``; the item's other fields are flags too, applied to every item.

A field of a class that cannot import this module (or is owned elsewhere) gets its help where it is
nested: ``setting(HealthConfig(), about={"base_ejection_s": "seconds ..."})``.

A command line wins over the environment, which wins over the dataclass's default. A value that does not
parse, and a ``ValueError`` from a dataclass's ``__post_init__``, end the program through
``parser.error``: exit status 2 with the message. Renamed flags keep working as hidden aliases that warn.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_KEY = "ringserve.flag"
_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def parse_size(text: str) -> int:
    """'256M', '1G', '4096' -> bytes (K, M, G are powers of 1024; a trailing B or iB is ignored)."""
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    if text and text[-1] in _UNITS:
        return int(float(text[:-1]) * _UNITS[text[-1]])
    return int(text)


@dataclass(frozen=True)
class Setting:
    """How one field is offered as a flag, beyond what its name, type and default already say."""

    help: str = ""
    parse: Callable[[str], Any] | None = None
    choices: Sequence[Any] | None = None
    metavar: str | None = None
    # A nested config: the prefix of its flags, its group's title, and help for fields it cannot declare.
    prefix: str = ""
    group: str | None = None
    about: Mapping[str, str | Setting] = field(default_factory=dict)
    # A tuple of configs: one value of the repeated flag -> the fields ``fills`` names.
    each: Callable[[str], Mapping[str, Any]] | None = None
    fills: tuple[str, ...] = ()


def setting(default: Any = MISSING, *, default_factory: Any = MISSING, **how: Any) -> Any:
    """``dataclasses.field`` with the flag's help and any of ``Setting``'s other parts."""
    return field(default=default, default_factory=default_factory, metadata={_KEY: Setting(**how)})


@dataclass(frozen=True)
class Flag:
    """One field as a flag: where it sits in the config, its spelling, and how its text becomes a value."""

    path: tuple[str, ...]
    option: str
    env: str
    group: str
    help: str
    parse: Callable[[str], Any] | None  # None: a bool
    default: Any
    metavar: str | None = None
    item: type | None = None  # a repeated flag: the config each value makes

    @property
    def dest(self) -> str:
        return self.option[2:].replace("-", "_")


class Flags(Generic[T]):
    """The flags of one component's config ``T``; ``renamed`` maps each old spelling to its flag."""

    def __init__(self, cls: type[T], env_prefix: str, title: str, renamed: Mapping[str, str] | None = None,
                 defaults: Callable[[], T] | None = None) -> None:
        """``defaults`` makes the config whose values are the flags' defaults (default: ``cls()``)."""
        self.env_prefix, self.renamed = env_prefix, dict(renamed or {})
        self.defaults = defaults or cls
        self.flags = list(_walk(cls, self.defaults(), env_prefix, (), "", title, Setting()))
        options = [f.option for f in self.flags]
        if len(set(options)) != len(options):
            raise TypeError(f"{cls.__name__}: two fields make the same flag: {sorted(options)}")
        known = set(options) | {"--no-" + f.option[2:] for f in self.flags if f.parse is None}
        if stale := sorted(new for new in self.renamed.values() if new not in known):
            raise TypeError(f"{cls.__name__}: renamed to flags that do not exist: {stale}")

    @property
    def environment(self) -> set[str]:
        """Every environment variable these flags read, old spellings included."""
        return {f.env for f in self.flags} | {_env(self.env_prefix, old) for old in self.renamed}

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Add every flag to ``parser``, one argument group per nested config."""
        groups: dict[str, Any] = {}
        for f in self.flags:
            if f.group not in groups:
                groups[f.group] = parser.add_argument_group(f.group)
            _add(groups[f.group], f)

    def parser(self, prog: str, description: str) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False)
        self.add_to(p)
        return p

    def parse(self, parser: argparse.ArgumentParser, argv: Sequence[str] | None, environ: Mapping[str, str],
              check: Callable[[T], None] | None = None) -> T:
        """The config from ``argv`` (default: ``sys.argv``) and ``environ``; ``check`` refuses with ValueError."""
        namespace = parser.parse_args(self.upgrade(sys.argv[1:] if argv is None else argv, parser.prog))
        return self.read(parser, namespace, environ, check)

    def upgrade(self, argv: Sequence[str], prog: str) -> list[str]:
        """``argv`` with each renamed flag spelled as today, warning once for each on stderr."""
        out = []
        for i, token in enumerate(argv):
            if token == "--":
                return out + list(argv[i:])
            name, eq, value = token.partition("=")
            if name in self.renamed:
                _warn(f"{prog}: {name} is deprecated, use {self.renamed[name]}")
                token = self.renamed[name] + eq + value
            out.append(token)
        return out

    def read(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, environ: Mapping[str, str],
             check: Callable[[T], None] | None = None) -> T:
        """The config from parsed flags, then the environment, then the defaults."""
        values = {f.path: v for f in self.flags if (v := self._value(parser, f, namespace, environ)) is not MISSING}
        items = {f.path: f.item for f in self.flags if f.item is not None}
        try:
            config = _build(self.defaults(), (), values, items)
            if check is not None:
                check(config)
            return config
        except ValueError as exc:
            parser.error(str(exc))
            raise  # unreachable: parser.error exits

    def _value(self, parser: argparse.ArgumentParser, f: Flag, namespace: argparse.Namespace,
               environ: Mapping[str, str]) -> Any:
        if hasattr(namespace, f.dest):
            return getattr(namespace, f.dest)
        env, text = f.env, environ.get(f.env)
        for old, new in self.renamed.items():
            if text is None and new == f.option and (text := environ.get(_env(self.env_prefix, old))) is not None:
                env = _env(self.env_prefix, old)
                _warn(f"{parser.prog}: {env} is deprecated, use {f.env}")
        if text is None:
            return MISSING
        try:
            if f.item is not None:
                return [f.parse(t) for t in text.split(",") if t]
            return f.parse(text) if f.parse else _bool(text)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            parser.error(f"{env} (the environment's {f.option}): {exc}")


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


def _bool(text: str) -> bool:
    if text.strip().lower() in _TRUE | _FALSE:
        return text.strip().lower() in _TRUE
    raise ValueError(f"must be one of {', '.join(sorted(_TRUE | _FALSE - {''}))}; got {text!r}")


def _add(group: Any, f: Flag) -> None:
    text = f"{f.help} (default: {_shown(f.default)}; env {f.env})".lstrip().replace("%", "%%")
    if f.parse is None:
        group.add_argument(f.option, dest=f.dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=text)
    else:
        group.add_argument(f.option, dest=f.dest, type=f.parse, default=argparse.SUPPRESS, metavar=f.metavar,
                           action="append" if f.item else "store", help=text)


def _shown(value: Any) -> str:
    if value is None or value == ():
        return "none"
    if value == "":
        return '""'
    if isinstance(value, tuple):
        return ",".join(_shown(v) for v in value)
    if isinstance(value, enum.Enum):
        return str(value.value)
    if is_dataclass(value):
        return str(getattr(value, "name", value))
    return str(value)


def _walk(cls: type, default: Any, env_prefix: str, path: tuple[str, ...], prefix: str, group: str,
          parent: Setting) -> Iterator[Flag]:
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if not f.init:
            continue
        how = _how(f, parent)
        hint, value = hints[f.name], getattr(default, f.name)
        option = "--" + (prefix + f.name).replace("_", "-")
        if is_dataclass(hint):
            title = how.group or f.name
            yield from _walk(hint, value, env_prefix, (*path, f.name), prefix + how.prefix, title, how)
        elif how.each is not None:
            yield from _items(hint, value, how, env_prefix, (*path, f.name), prefix, how.group or group, option)
        else:
            parse, metavar = _parser(hint, how, f.name)
            yield Flag((*path, f.name), option, _env(env_prefix, option), group, how.help, parse, value,
                       metavar=metavar)


def _items(hint: Any, value: Any, how: Setting, env_prefix: str, path: tuple[str, ...], prefix: str, group: str,
           option: str) -> Iterator[Flag]:
    """A repeated flag for a tuple of configs, and a flag for each field of the item that it does not fill."""
    (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
    yield Flag(path, option, _env(env_prefix, option), group, how.help, _checked(how.each), value,
               metavar=how.metavar, item=item)
    hints = typing.get_type_hints(item)
    for f in fields(item):
        if f.name in how.fills or not f.init:
            continue
        sub = _how(f, how)
        parse, metavar = _parser(hints[f.name], sub, f.name)
        sub_option = "--" + (prefix + how.prefix + f.name).replace("_", "-")
        yield Flag((*path, f.name), sub_option, _env(env_prefix, sub_option), group, sub.help, parse,
                   getattr(item(), f.name), metavar=metavar)


def _how(f: dataclasses.Field, parent: Setting) -> Setting:
    about = parent.about.get(f.name)
    if isinstance(about, Setting):
        return about
    own = f.metadata.get(_KEY, Setting())
    return replace(own, help=about) if isinstance(about, str) else own


def _env(prefix: str, option: str) -> str:
    return prefix + option[2:].replace("-", "_").upper()


def _parser(hint: Any, how: Setting, name: str) -> tuple[Callable[[str], Any] | None, str | None]:
    """The text -> value function of a field (None for a bool) and the metavar that shows its choices."""
    optional = type(None) in typing.get_args(hint) and typing.get_origin(hint) in (typing.Union, types.UnionType)
    base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    choices = how.choices
    if how.parse is not None:
        parse = how.parse
    elif base is bool:
        return None, None
    elif isinstance(base, type) and issubclass(base, enum.Enum):
        parse, choices = base, choices or [m.value for m in base]
    elif base is int and name.endswith("_bytes"):
        parse = parse_size
    elif base in (int, float, str, Path):
        parse = base
    else:
        raise TypeError(f"{name}: no flag type for {hint!r}; declare setting(parse=...)")
    metavar = how.metavar or ("{" + ",".join(str(c) for c in choices) + "}" if choices else None)
    return _checked(parse, choices, optional), metavar


def _checked(parse: Callable[[str], Any], choices: Sequence[Any] | None = None,
             optional: bool = False) -> Callable[[str], Any]:
    """``parse`` whose refusal (ValueError) is a message argparse shows after the flag's name."""
    def value(text: str) -> Any:
        if optional and text == "":
            return None
        if choices is not None and text not in [str(c) for c in choices]:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(map(str, choices))}; got {text!r}")
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc) or f"cannot read {text!r}") from None

    value.__name__ = getattr(parse, "__name__", "value")
    return value


def _build(default: Any, path: tuple[str, ...], values: Mapping[tuple[str, ...], Any],
           items: Mapping[tuple[str, ...], type]) -> Any:
    """``default`` with every value given under ``path`` put in, nested configs rebuilt (and so checked)."""
    changes: dict[str, Any] = {}
    for f in fields(default):
        here, current = (*path, f.name), getattr(default, f.name)
        if not f.init:
            continue
        if here in items:
            built = _build_items(current, here, values, items[here])
        elif is_dataclass(current) and not isinstance(current, type):
            built = _build(current, here, values, items)
        else:
            built = values.get(here, current)
        if built is not current:
            changes[f.name] = built
    return replace(default, **changes) if changes else default


def _build_items(current: tuple, path: tuple[str, ...], values: Mapping[tuple[str, ...], Any], item: type) -> tuple:
    """The repeated flag's items (else the default ones), each with the item flags given."""
    shared = {k[-1]: v for k, v in values.items() if len(k) == len(path) + 1 and k[:-1] == path}
    specs = values.get(path)
    if specs is None:
        return tuple(replace(one, **shared) for one in current) if shared else current
    return tuple(item(**{**spec, **shared}) for spec in specs)
