"""The typed configuration: YAML text, ``--set`` strings and typed overrides all go through
``config.coerce_value``; wrong types, unknown keys and out-of-range values are one-line
``ConfigError``s that name the key."""

from __future__ import annotations

import dataclasses
import logging
import typing
from pathlib import Path
from typing import Any

import pytest

from transferlab import config
from transferlab.config import RunConfig, coerce_value, from_dict, known_keys, load_yaml
from transferlab.errors import ConfigError


def from_yaml(tmp_path: Path, text: str) -> RunConfig:
    """A config built from YAML text exactly as ``--config FILE`` reads it."""
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return from_dict(load_yaml(path))


def one_line_error(call: Any, *names: str) -> str:
    with pytest.raises(ConfigError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for name in names:
        assert name in message, (name, message)
    return message


# --- types -------------------------------------------------------------------------------


def test_yaml_exponent_floats_are_numbers(tmp_path: Path) -> None:
    # PyYAML reads 1e-3 (no dot) as a string; the user means a number.
    cfg = from_yaml(tmp_path, "train: {lr: 1e-3, head_lr: 3e-3, weight_decay: 5e-2}\n")
    assert (cfg.train.lr, cfg.train.head_lr, cfg.train.weight_decay) == (0.001, 0.003, 0.05)
    assert isinstance(cfg.train.lr, float)


def test_a_word_for_a_float_names_key_value_and_type(tmp_path: Path) -> None:
    message = one_line_error(
        lambda: from_yaml(tmp_path, "train: {lr: fast}\n"), "train.lr", "'fast'", "float"
    )
    assert message.startswith("train.lr")


def test_a_numeric_string_is_an_int(tmp_path: Path) -> None:
    assert from_yaml(tmp_path, 'train: {epochs: "4"}\n').train.epochs == 4
    assert from_yaml(tmp_path, "train: {epochs: 4.0}\n").train.epochs == 4


@pytest.mark.parametrize("value", ["2.5", "true", '"2.5"', "[1]", "fast"])
def test_ints_refuse_fractions_bools_and_words(tmp_path: Path, value: str) -> None:
    one_line_error(
        lambda: from_yaml(tmp_path, f"train: {{epochs: {value}}}\n"), "train.epochs", "int"
    )


def test_floats_refuse_bools(tmp_path: Path) -> None:
    one_line_error(lambda: from_yaml(tmp_path, "train: {lr: true}\n"), "train.lr", "True")


def test_choices_are_literal_types_and_listed_in_the_error(tmp_path: Path) -> None:
    hints = typing.get_type_hints(config.TrainConfig)
    assert typing.get_args(hints["strategy"]) == config.STRATEGIES
    one_line_error(
        lambda: from_yaml(tmp_path, "train: {optimizer: lion}\n"),
        "train.optimizer",
        "'lion'",
        "adamw, adam, sgd, rmsprop",
    )


def test_bools_from_text_and_yaml() -> None:
    assert coerce_value("train.nesterov", "yes") is True
    assert coerce_value("train.nesterov", False) is False
    one_line_error(lambda: coerce_value("train.nesterov", "maybe"), "train.nesterov")
    one_line_error(lambda: coerce_value("train.nesterov", 1), "train.nesterov")


def test_lists_from_yaml_and_from_text() -> None:
    assert coerce_value("model.hidden_units", [256, 128]) == (256, 128)
    assert coerce_value("model.hidden_units", "256,128") == (256, 128)
    assert coerce_value("train.milestones", "[10, 20]") == (10, 20)
    assert coerce_value("train.milestones", "") == ()
    message = one_line_error(lambda: coerce_value("train.milestones", "5,x"), "train.milestones")
    assert "10,20" in message and "1024,512" not in message


def test_null_where_none_is_allowed_and_none_as_a_word_where_it_is_a_value() -> None:
    assert coerce_value("model.image_size", "null") is None
    assert coerce_value("train.early_stopping", "none") is None
    assert coerce_value("augment.preset", "none") == "none"  # the preset called none
    assert coerce_value("model.weights", "none") == "none"
    one_line_error(lambda: coerce_value("train.lr", None), "train.lr")


def test_model_kwargs_take_a_mapping_or_single_entries() -> None:
    cfg = from_dict({"model": {"kwargs": {"width": 0.5}}}, {"model.kwargs.stride": "2"})
    assert cfg.model.kwargs == {"width": 0.5, "stride": 2}
    assert coerce_value("model.kwargs", "{stride: 2}") == {"stride": 2}
    one_line_error(lambda: coerce_value("model.kwargs", "[1, 2]"), "model.kwargs")
    one_line_error(lambda: coerce_value("train.lr.x", 1), "train.lr")


# --- keys --------------------------------------------------------------------------------


def test_unknown_section_lists_the_sections(tmp_path: Path) -> None:
    one_line_error(lambda: from_yaml(tmp_path, "foo: {bar: 1}\n"), "'foo'", "data, model, train")


def test_unknown_key_lists_the_known_keys(tmp_path: Path) -> None:
    message = one_line_error(lambda: from_yaml(tmp_path, "train: {foo: 1}\n"), "train.foo")
    assert "epochs" in message and "head_epochs" in message


@pytest.mark.parametrize(
    ("key", "names"),
    [
        ("foo.bar", ["'foo.bar'", "data, model, train"]),
        ("train.lrr", ["train.lrr", "did you mean train.lr?"]),
        ("lr", ["'lr'", "train.lr"]),
    ],
)
def test_unknown_override_keys_are_errors(key: str, names: list[str]) -> None:
    one_line_error(lambda: from_dict({}, {key: "1"}), *names)


def test_known_keys_are_every_field() -> None:
    keys = known_keys()
    assert len(keys) == sum(len(dataclasses.fields(s)) for s in config._SECTIONS.values())
    assert {"train.lr", "train.head_epochs", "model.kwargs", "augment.cutmix"} <= set(keys)
    assert keys == sorted(keys)


def test_renamed_keys_work_in_yaml_and_overrides(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        assert from_yaml(tmp_path, "train: {warmup_epochs: 2}\n").train.head_epochs == 2
        assert from_dict({}, {"train.warmup_lr": "1e-2"}).train.head_lr == 0.01
    warned = [r.getMessage() for r in caplog.records]
    assert any("train.warmup_epochs is now train.head_epochs" in m for m in warned)
    assert any("train.warmup_lr is now train.head_lr" in m for m in warned)
    # The new key wins where both are given.
    both = from_dict({"train": {"warmup_epochs": 2, "head_epochs": 3}})
    assert both.train.head_epochs == 3


# --- one coercion for every source -------------------------------------------------------


def test_set_strings_typed_overrides_and_yaml_agree(tmp_path: Path) -> None:
    text = (
        "train: {lr: 3e-4, epochs: 6, nesterov: true, milestones: [2, 4]}\n"
        "model: {image_size: 96}\n"
    )
    from_file = from_yaml(tmp_path, text)
    as_strings = from_dict(
        {},
        {
            "train.lr": "3e-4",
            "train.epochs": "6",
            "train.nesterov": "true",
            "train.milestones": "2,4",
            "model.image_size": "96",
        },
    )
    typed = from_dict(
        {},
        {
            "train.lr": 3e-4,
            "train.epochs": 6,
            "train.nesterov": True,
            "train.milestones": (2, 4),
            "model.image_size": 96,
        },
    )
    assert from_file == as_strings == typed


def test_overrides_win_over_yaml_and_none_means_null() -> None:
    cfg = from_dict({"model": {"image_size": 96}}, {"model.image_size": None})
    assert cfg.model.image_size is None


def test_a_saved_config_yaml_loads_back_equal(tmp_path: Path) -> None:
    cfg = from_dict({}, {"data.path": "x", "model.head": "mlp", "model.kwargs.stride": 2})
    cfg.to_yaml(tmp_path / "config.yaml")
    assert from_dict(load_yaml(tmp_path / "config.yaml")) == cfg


# --- ranges ------------------------------------------------------------------------------

OUT_OF_RANGE: dict[str, list[Any]] = {
    "data.val_fraction": [-0.1, 1.0],
    "data.test_fraction": [-0.1, 1.5],
    "data.memory_cache_mb": [-1],
    "data.num_workers": [-1],
    "model.image_size": [8, 0],
    "model.drop_rate": [-0.1, 1.0],
    "model.hidden_units": [[512, 0]],
    "model.head_dropout": [1.0, -0.5],
    "augment.hflip": [7, -0.1],
    "augment.scale_min": [5, 0],
    "augment.rotation": [-400, 181],
    "augment.color_jitter": [-2, 1.5],
    "augment.randaugment": [-1],
    "augment.randaugment_magnitude": [99, -1],
    "augment.mixup": [-3],
    "augment.cutmix": [-1],
    "train.epochs": [-1],
    "train.head_epochs": [-1],
    "train.trainable_groups": [0, -2],
    "train.batch_size": [0],
    "train.lr": [0, -1e-3],
    "train.head_lr": [0],
    "train.backbone_lr_mult": [0],
    "train.weight_decay": [-0.01],
    "train.layer_decay": [0, 1.5],
    "train.momentum": [1.0, -0.1],
    "train.lr_warmup_epochs": [-1],
    "train.step_size": [0],
    "train.milestones": [[0, 5]],
    "train.gamma": [0, 2],
    "train.plateau_patience": [-1],
    "train.label_smoothing": [1.0, -0.1],
    "train.early_stopping": [0],
    "train.min_delta": [-0.001],
    "train.seed": [-1],
    "train.ema_decay": [0, 1.0],
    "train.resize_from": [8],
    "train.time_budget": [0, -60],
    "train.grad_accum": [0],
}


def _numeric(tp: Any) -> bool:
    args = typing.get_args(tp)
    return tp in (int, float) or any(_numeric(a) for a in args if a is not type(None))


def test_every_numeric_key_has_a_range_and_a_case_here() -> None:
    numeric = {
        f"{name}.{key}"
        for name, section in config._SECTIONS.items()
        for key, tp in typing.get_type_hints(section).items()
        if _numeric(tp)
    }
    assert numeric == set(config.LIMITS) == set(OUT_OF_RANGE)


@pytest.mark.parametrize(
    ("key", "value"), [(k, v) for k, values in OUT_OF_RANGE.items() for v in values]
)
def test_out_of_range_values_name_the_key(key: str, value: Any) -> None:
    message = one_line_error(lambda: from_dict({}, {key: value}), key, "out of range")
    assert str(config.LIMITS[key]) in message


@pytest.mark.parametrize("key", list(OUT_OF_RANGE))
def test_the_defaults_are_in_range(key: str) -> None:
    section, name = key.split(".")
    default = getattr(getattr(RunConfig(), section), name)
    assert coerce_value(key, default) == default


def test_range_edges_that_are_allowed() -> None:
    cfg = from_dict(
        {},
        {
            "augment.hflip": 1,
            "augment.scale_min": 1,
            "augment.rotation": 180,
            "augment.randaugment_magnitude": 30,
            "train.layer_decay": 1,
            "train.gamma": 1,
            "train.min_delta": 0,
            "data.num_workers": 0,
        },
    )
    assert cfg.augment.randaugment_magnitude == 30 and cfg.train.layer_decay == 1.0


def test_validate_checks_configs_built_in_code() -> None:
    bad = dataclasses.replace(RunConfig(), train=dataclasses.replace(RunConfig().train, lr=-1))
    one_line_error(bad.validate, "train.lr")


# --- rules across keys -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"train.scheduler": "multistep"}, ["--scheduler multistep", "--milestones"]),
        ({"model.head": "mlp", "model.hidden_units": ""}, ["--head mlp", "--hidden-units"]),
        ({"model.hidden_units": "512"}, ["model.hidden_units", "--head mlp"]),
        ({"train.strategy": "top-n"}, ["--trainable-groups", "N >= 1"]),
        ({"data.val_fraction": 0.5, "data.test_fraction": 0.5}, ["--val-fraction"]),
    ],
)
def test_silent_no_ops_and_conflicts_are_errors(
    overrides: dict[str, Any], names: list[str]
) -> None:
    one_line_error(lambda: from_dict({}, overrides), *names)


def test_multistep_with_milestones_and_mlp_with_units_are_fine() -> None:
    cfg = from_dict(
        {},
        {
            "train.scheduler": "multistep",
            "train.milestones": "2,4",
            "model.head": "mlp",
            "model.hidden_units": "64",
        },
    )
    assert cfg.train.milestones == (2, 4) and cfg.model.hidden_units == (64,)


@pytest.mark.parametrize("devices", ["0", "-1", "two", "1.5"])
def test_devices_must_be_a_count_or_auto(devices: str) -> None:
    with pytest.raises(ConfigError, match="--devices"):
        config.from_dict({"train": {"devices": devices}})


def test_devices_takes_counts_and_auto() -> None:
    assert config.from_dict({"train": {"devices": 2}}).train.devices == "2"
    assert config.from_dict({"train": {"devices": "auto"}}).train.devices == "auto"


def test_time_budget_takes_durations_from_set_and_yaml() -> None:
    assert from_dict({}, {"train.time_budget": "15m"}).train.time_budget == 900.0
    assert from_dict({"train": {"time_budget": "1h30m"}}).train.time_budget == 5400.0
    assert from_dict({"train": {"time_budget": 90}}).train.time_budget == 90.0
    assert from_dict({}, {"train.time_budget": "null"}).train.time_budget is None
    with pytest.raises(ConfigError, match=r"train.time_budget 'soon' is not a duration; use"):
        from_dict({}, {"train.time_budget": "soon"})
