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
        ("model.width=-8", r"model.width: must be in \[1, 512\], got -8"),
        ("model.width=100000", "model.width: must be in"),
        ("data.crop_size=-5", "data.crop_size: must be in"),
        ("optim.lr=-1", "optim.lr: must be in"),
        ("train.log_every=0", "train.log_every: must be >= 1"),
        ("train.max_steps_per_epoch=-7", "train.max_steps_per_epoch: must be >= 0"),
        ("scaling.cpus_per_worker=-2", "scaling.cpus_per_worker: must be >= 0.01"),
        ("data.darken_prob=7", r"data.darken_prob: must be in \[0, 1\]"),
        ("data.darken_max=1.5", "data.darken_max: must be >= data.darken_min"),
        ("model.prior='retinex'", "model.prior: must be one of none, lime"),
        ("loss.patch_size=400", r"loss.patch_size: must be <= data.crop_size \(320\)"),
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


def test_every_numeric_key_has_a_range_and_the_library_path_checks_it() -> None:
    import dataclasses

    from enlighten_ray.config import RANGES

    cfg = Config()
    numeric = {
        f"{section.name}.{f.name}"
        for section in dataclasses.fields(cfg)
        for f in dataclasses.fields(getattr(cfg, section.name))
        if f.type in ("int", "float")
    }
    assert numeric == set(RANGES)
    values = cfg.to_dict()
    values["train"]["batch_size"] = 0
    with pytest.raises(BadInputError, match="train.batch_size: must be >= 1"):
        from_dict(values)


def test_a_config_built_in_code_is_checked_like_a_loaded_one() -> None:
    from enlighten_ray.config import ModelSettings, validate

    with pytest.raises(BadInputError, match="model.width: expected int, got '8'"):
        validate(Config(model=ModelSettings(width="8")))
    assert validate(Config(model=ModelSettings(width=8))).model.width == 8
