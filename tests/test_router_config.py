import subprocess
import sys

import pytest

from ringserve.router import config


def test_exactly_one_membership_source(capsys):
    with pytest.raises(SystemExit):
        config.from_args([], {})
    with pytest.raises(SystemExit):
        config.from_args(["--members", "a=h:1", "--members-dns", "x"], {})
    assert "exactly one" in capsys.readouterr().err


def test_environment_fills_and_flags_win():
    env = {"RINGSERVE_ROUTER_MEMBERS": "b=h:2,a=h:1*2", "RINGSERVE_ROUTER_LOAD_FACTOR": "1.5"}
    c = config.from_args(["--load-factor", "2"], env)
    assert [m.name for m in c.membership.static] == ["a", "b"] and c.membership.static[0].weight == 2
    assert c.placement.load_factor == 2.0


def test_placement_flags_are_checked_and_named(capsys):
    assert config.from_args(["--members", "a=h:1"], {"RINGSERVE_ROUTER_MIN_LOAD": "3"}).placement.min_load == 3
    assert config.from_args(["--members", "a=h:1"], {}).placement.min_load == config.PlacementConfig().min_load
    for flag, value in (("--min-load", "0"), ("--load-factor", "0.5"), ("--max-attempts", "0")):
        with pytest.raises(SystemExit):
            config.from_args(["--members", "a=h:1", flag, value], {})
        assert flag in capsys.readouterr().err


def test_bad_member_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        config.from_args(["--members", "nohostport"], {})
    assert "expected name=host:port" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["ringserve.router.main", "ringserve.server.main", "ringserve.local.up",
                                    "ringserve.client.cli", "ringserve.contract.generate"])
def test_every_command_has_help(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "usage:" in out.stdout
