"""contract.flags: one declaration per setting makes its flag, its environment variable and its help."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from pathlib import Path

import pytest

from ringserve.contract.flags import Flags, Setting, parse_size, setting

pytestmark = pytest.mark.fast


class Colour(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Inner:
    # A class that knows nothing of flags: its help is declared where it is nested.
    budget_s: float = 30.0
    max_bytes: int = 1024

    def __post_init__(self) -> None:
        if self.budget_s < 0:
            raise ValueError(f"--retry-budget-s {self.budget_s} must be >= 0")


@dataclass(frozen=True)
class Item:
    name: str = "a"
    seed: int = 0


@dataclass(frozen=True)
class Outer:
    drain_delay_s: float = setting(1.0, help="seconds of drain")
    colour: Colour = setting(Colour.RED, help="a colour")
    out: Path | None = setting(None, help="a file")
    verbose: bool = setting(False, help="say more")
    retry: Inner = setting(Inner(), prefix="retry-", group="retries", about={"budget_s": "seconds re-sent"})
    items: tuple[Item, ...] = setting((Item(),), each=lambda text: {"name": text}, fills=("name",),
                                      about={"seed": Setting(help="seed of every item")})


def flags() -> Flags[Outer]:
    return Flags(Outer, "APP_", "app", renamed={"--drain-delay": "--drain-delay-s", "--budget": "--retry-budget-s"})


def parse(argv: list[str], environ: dict[str, str] | None = None) -> Outer:
    f = flags()
    return f.parse(f.parser("app", "test"), argv, environ or {})


def test_a_fields_flag_and_env_var_are_derived_from_its_name():
    f = flags()
    by_path = {x.path: x for x in f.flags}
    assert by_path[("drain_delay_s",)].option == "--drain-delay-s"
    assert by_path[("drain_delay_s",)].env == "APP_DRAIN_DELAY_S"
    assert parse(["--drain-delay-s", "2.5"]).drain_delay_s == 2.5
    assert parse(["--colour", "blue", "--out", "x.txt", "--verbose"]) == Outer(colour=Colour.BLUE, out=Path("x.txt"),
                                                                               verbose=True)
    assert parse([]) == Outer()


def test_a_nested_config_is_a_group_under_the_prefix_its_field_declares(capsys):
    c = parse(["--retry-budget-s", "3", "--retry-max-bytes", "2K"])
    assert c.retry == Inner(budget_s=3.0, max_bytes=2048)  # an int named *_bytes reads sizes
    assert {x.option for x in flags().flags if x.group == "retries"} == {"--retry-budget-s", "--retry-max-bytes"}
    with pytest.raises(SystemExit):
        parse(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "retries:" in out and "seconds re-sent (default: 30.0; env APP_RETRY_BUDGET_S)" in out


def test_a_repeated_flag_makes_items_and_the_items_other_fields_apply_to_each():
    assert parse(["--items", "x", "--items", "y", "--seed", "3"]).items == (Item("x", 3), Item("y", 3))
    assert parse(["--seed", "4"]).items == (Item("a", 4),)
    assert parse([], {"APP_ITEMS": "p,q"}).items == (Item("p"), Item("q"))


def test_the_environment_sets_a_default_and_the_command_line_wins():
    env = {"APP_DRAIN_DELAY_S": "7", "APP_RETRY_BUDGET_S": "9", "APP_VERBOSE": "yes", "APP_ITEMS": "e"}
    c = parse(["--drain-delay-s", "2", "--items", "cli"], env)
    assert c.drain_delay_s == 2.0 and c.retry.budget_s == 9.0 and c.verbose
    assert c.items == (Item("cli"),)  # a repeated flag on the command line replaces the environment's, not adds
    assert parse(["--no-verbose"], env).verbose is False


def test_a_renamed_flag_still_works_hidden_and_warns_naming_the_new_one(capsys):
    assert parse(["--drain-delay", "3", "--budget=4"]) == Outer(drain_delay_s=3.0, retry=Inner(budget_s=4.0))
    err = capsys.readouterr().err
    assert "--drain-delay is deprecated, use --drain-delay-s" in err and "use --retry-budget-s" in err
    assert parse([], {"APP_DRAIN_DELAY": "5"}).drain_delay_s == 5.0
    assert "APP_DRAIN_DELAY is deprecated, use APP_DRAIN_DELAY_S" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["--help"])
    assert "--drain-delay " not in capsys.readouterr().out
    with pytest.raises(TypeError, match="--nowhere"):
        Flags(Outer, "APP_", "app", renamed={"--old": "--nowhere"})


@pytest.mark.parametrize(("argv", "environ", "says"), [
    (["--drain-delay-s", "soon"], {}, "argument --drain-delay-s: could not convert string to float: 'soon'"),
    (["--colour", "green"], {}, "argument --colour: must be one of red, blue; got 'green'"),
    (["--retry-budget-s", "-1"], {}, "--retry-budget-s -1.0 must be >= 0"),  # __post_init__'s ValueError
    ([], {"APP_RETRY_MAX_BYTES": "lots"}, "APP_RETRY_MAX_BYTES (the environment's --retry-max-bytes)"),
])
def test_a_bad_value_exits_2_naming_the_flag(argv, environ, says, capsys):
    with pytest.raises(SystemExit) as exit:
        parse(argv, environ)
    assert exit.value.code == 2 and says in capsys.readouterr().err


def test_two_fields_that_would_make_one_flag_are_refused():
    @dataclass(frozen=True)
    class Clash:
        retry_budget_s: float = 1.0
        retry: Inner = setting(Inner(), prefix="retry-")

    with pytest.raises(TypeError, match="same flag"):
        Flags(Clash, "X_", "x")


@pytest.mark.parametrize("text, value", [("4096", 4096), ("2K", 2048), ("1.5M", 1572864), ("1GiB", 1 << 30)])
def test_parse_size(text, value):
    assert parse_size(text) == value


def _leaves(cls: type, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    out = set()
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type if isinstance(f.type, type) else None):
            out |= _leaves(f.type, (*prefix, f.name))
        else:
            out.add((*prefix, f.name))
    return out


@pytest.mark.parametrize("component", ["server", "router"])
def test_every_field_of_a_component_config_is_a_flag(component):
    """Flags are derived from the fields, so a new field has one: this holds the derivation to it."""
    import typing

    from ringserve.router import config as router_config
    from ringserve.server import config as server_config

    module = server_config if component == "server" else router_config
    flags = module.flags() if component == "server" else module.FLAGS
    root = module.ServerConfig if component == "server" else module.RouterConfig
    paths = {f.path for f in flags.flags}

    def walk(cls: type, path: tuple[str, ...]) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            here, hint = (*path, f.name), hints[f.name]
            if dataclasses.is_dataclass(hint):
                walk(hint, here)
            elif here in paths:
                continue
            else:  # a repeated flag's items: every field is filled by it or is a flag of its own
                item = typing.get_args(hint)[0]
                assert here in paths and dataclasses.is_dataclass(item), here
                for g in dataclasses.fields(item):
                    setting_ = f.metadata["ringserve.flag"]
                    assert g.name in setting_.fills or (*here, g.name) in paths, (*here, g.name)

    walk(root, ())
    assert len({f.option for f in flags.flags}) == len(flags.flags)
    assert not [f.option for f in flags.flags if not f.help], "declare help with setting(help=...) or about={...}"


def test_no_two_components_read_one_environment_variable():
    """A shell that sets the client's variables starts nodes and routers that must not read them (and a node pod's
    settings must not steer the client run inside it): old spellings included."""
    from ringserve.client.cli import CLIENT_FLAGS
    from ringserve.router.config import FLAGS as ROUTER_FLAGS
    from ringserve.server.config import flags as node_flags

    client, node, router = CLIENT_FLAGS.environment, node_flags().environment, ROUTER_FLAGS.environment
    assert not client & node and not client & router and not node & router
    assert "RINGSERVE_CLIENT_TARGET" in client and "RINGSERVE_CACHE_MODE" in node  # the rule sees both sides


def test_ringserve_target_still_sets_the_clients_target():
    from ringserve.client.cli import CLIENT_FLAGS, build_parser, client_environment

    parser = build_parser()
    args = parser.parse_args(["models"])
    assert CLIENT_FLAGS.read(parser, args, client_environment({"RINGSERVE_TARGET": "h:1"})).target == "h:1"
    both = {"RINGSERVE_TARGET": "h:1", "RINGSERVE_CLIENT_TARGET": "h:2"}
    assert CLIENT_FLAGS.read(parser, args, client_environment(both)).target == "h:2"
