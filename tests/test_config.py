"""Configuration: paper defaults, YAML and --set overrides, unknown keys and bad types rejected."""

from __future__ import annotations

from pathlib import Path

import pytest
from _media import REPO

from enlighten_ray.config import Config, from_dict, load_config
from enlighten_ray.errors import BadInputError

CONFIGS = REPO / "configs"


def test_defaults_are_the_paper() -> None:
    cfg = Config()
    assert (cfg.model.width, cfg.data.crop_size, cfg.train.batch_size) == (32, 320, 32)
    assert (cfg.loss.num_patches, cfg.loss.patch_size, cfg.loss.vgg_pool4) == (5, 32, False)
    assert (cfg.optim.lr, cfg.optim.beta1, cfg.optim.beta2, cfg.epochs) == (1e-4, 0.5, 0.999, 200)
    assert (cfg.data.darken_prob, cfg.data.darken_min, cfg.data.darken_max) == (0.5, 2.0, 4.0)


def test_paper_yaml_equals_the_defaults() -> None:
    cfg = load_config(CONFIGS / "paper.yaml")
    cfg.run.name = Config().run.name
    assert cfg == Config()


def test_overrides_are_typed_and_applied_after_yaml() -> None:
    cfg = load_config(CONFIGS / "smoke.yaml", ["train.batch_size=8", "optim.lr=2e-4", "model.align_corners=false"])
    assert cfg.model.width == 4  # from smoke.yaml
    assert cfg.train.batch_size == 8 and cfg.optim.lr == 2e-4 and cfg.model.align_corners is False
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0  # an int where a float is expected is fine
    assert load_config(None, ["data.low=s3://bucket/night"]).data.low == "s3://bucket/night"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.widht=8", "model.widht: unknown config key"),
        ("modle.width=8", "modle: unknown config key"),
        ("model.width=8.5", "model.width: expected int"),
        ("model.width=true", "model.width: expected int"),
        ("scaling.use_gpu=2", "scaling.use_gpu: expected bool"),
        ("width=8", "overrides look like section.key=value"),
    ],
)
def test_bad_overrides_name_the_key(override: str, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        load_config(None, [override])


def test_unknown_yaml_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("loss:\n  sfp_weigth: 2\n")
    with pytest.raises(BadInputError, match="loss.sfp_weigth: unknown config key"):
        load_config(path)


def test_round_trip_through_a_plain_dict() -> None:
    cfg = load_config(CONFIGS / "smoke.yaml")
    assert from_dict(cfg.to_dict()) == cfg
