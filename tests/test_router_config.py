import subprocess
import sys

import pytest

from ringserve.router import config


def test_exactly_one_membership_source(capsys):
    with pytest.raises(SystemExit):
        config.from_args([], {})
    with pytest.raises(SystemExit):
        config.from_args(["--members-static", "a=h:1", "--members-dns-name", "x"], {})
    assert "exactly one" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        config.from_args(["--members-k8s-service", "no-namespace"], {})
    assert "--members-k8s-service takes NAMESPACE/SERVICE" in capsys.readouterr().err


def test_environment_fills_and_flags_win():
    env = {"RINGSERVE_ROUTER_MEMBERS_STATIC": "b=h:2,a=h:1*2", "RINGSERVE_ROUTER_LOAD_FACTOR": "1.5"}
    c = config.from_args(["--load-factor", "2"], env)
    assert [m.name for m in c.membership.static] == ["a", "b"] and c.membership.static[0].weight == 2
    assert c.placement.load_factor == 2.0


def test_placement_flags_are_checked_and_named(capsys):
    members = ["--members-static", "a=h:1"]
    assert config.from_args(members, {"RINGSERVE_ROUTER_MIN_LOAD": "3"}).placement.min_load == 3
    assert config.from_args(members, {}).placement.min_load == config.PlacementConfig().min_load
    for flag, value in (("--min-load", "0"), ("--load-factor", "0.5"), ("--retry-max-attempts", "0")):
        with pytest.raises(SystemExit) as exit:
            config.from_args([*members, flag, value], {})
        assert exit.value.code == 2 and flag in capsys.readouterr().err


def test_each_field_is_the_flag_of_its_name_and_old_spellings_still_work(capsys):
    new = ["--members-dns-name", "_grpc._tcp.n", "--members-dns-port", "7", "--members-dns-server", "10.0.0.1",
           "--members-dns-server-port", "5353", "--members-interval-s", "2", "--policy", "round-robin",
           "--retry-budget-s", "3", "--retry-backoff-base-s", "0.01", "--retry-backoff-max-s", "0.1",
           "--retry-max-attempts", "2", "--base-ejection-s", "1", "--image-max-bytes", "1M", "--drain-delay-s", "2",
           "--grace-s", "5", "--search-poll-s", "0.1", "--search-snapshot-every-s", "9"]
    old = ["--members-dns", "_grpc._tcp.n", "--dns-node-port", "7", "--dns-server", "10.0.0.1",
           "--dns-server-port", "5353", "--members-interval", "2", "--placement", "round-robin",
           "--retry-budget", "3", "--backoff-base", "0.01", "--backoff-max", "0.1",
           "--max-attempts", "2", "--base-ejection", "1", "--max-image-bytes", "1M", "--drain-delay", "2",
           "--grace", "5", "--search-poll", "0.1", "--search-snapshot-every", "9"]
    c = config.from_args(new, {})
    assert c == config.from_args(old, {"RINGSERVE_ROUTER_ROUTER_ID": c.router_id})
    assert c.membership.dns_port == 7 and c.retry.budget_s == 3.0 and c.limits.max_bytes == 1 << 20
    assert c.search.follower.poll_s == 0.1 and c.drain_delay_s == 2.0
    assert "--placement is deprecated, use --policy" in capsys.readouterr().err
    k8s = config.from_args(["--members-k8s", "ns/svc", "--k8s-port-name", "g", "--k8s-api", "http://api"], {})
    assert (k8s.membership.k8s_service, k8s.membership.k8s_port_name, k8s.membership.k8s_api) == ("ns/svc", "g",
                                                                                                    "http://api")
    old_env = {"RINGSERVE_ROUTER_MEMBERS": "a=h:1", "RINGSERVE_ROUTER_DRAIN_DELAY": "3"}
    assert config.from_args([], old_env).drain_delay_s == 3.0  # an old manifest's environment


def test_bad_member_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        config.from_args(["--members-static", "nohostport"], {})
    assert "expected name=host:port" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["ringserve.router.main", "ringserve.server.main", "ringserve.local.up",
                                    "ringserve.client.cli", "ringserve.contract.generate"])
def test_every_command_has_help(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "usage:" in out.stdout


def test_every_renamed_flag_is_in_the_operators_table():
    """docs/deploy.md lists each old spelling with its new one, so a manifest's owner can find it."""
    from pathlib import Path

    from ringserve.client import cli
    from ringserve.server import config as node_config

    table = (Path(__file__).resolve().parents[1] / "docs" / "deploy.md").read_text()
    for command, renamed in (("ringserve-node", node_config.RENAMED), ("ringserve-router", config.RENAMED),
                             ("ringserve", cli.RENAMED)):
        for old, new in renamed.items():
            assert f"| `{command}` | `{old}` | `{new}` |" in table, (command, old)
