"""Tests for csvr.config: presets, validation, dotted keys and the CLI's config errors.

Run: python -m pytest tests/test_config.py -q
"""
import dataclasses
import typing

import pytest

from csvr import config as C
from csvr.config import (Config, ConfigError, FinetuneConfig, apply_overrides, flatten, from_flat,
                         keys, parse_overrides, preset)

ABLATIONS = {  # the ablation keys of the paper's tables and figures, with every value they take
    "model.backbone": ("c3d", "r2plus1d", "r3d", "s3d"),
    "model.integration": ("adain", "concat"),
    "model.pose_encoder_layer": (2, 4, 6),
    "loss.context": ("mi_infonce", "infonce", "l2"),
    "loss.generation_target": ("both", "reconstruct", "predict"),
    "eval.feature_source": ("scratch", "f_d", "f_s", "f_i_adain", "f_i_concat", "f_i_full"),
    "train.gan_update": ("osgan", "alternating"),
}


def field_hints() -> dict[str, typing.Any]:
    """{"model.backbone": Literal[...], ...} for every dotted key."""
    out = {}
    for section in dataclasses.fields(Config):
        sub_cls = type(getattr(Config(), section.name))
        for name, hint in typing.get_type_hints(sub_cls).items():
            out[f"{section.name}.{name}"] = hint
    return out


LITERAL_KEYS = [k for k, h in field_hints().items() if typing.get_origin(h) is typing.Literal]


@pytest.mark.parametrize("name", ["paper", "tiny"])
def test_presets_build(name):
    cfg = preset(name)
    assert isinstance(cfg, Config)
    C.validate(cfg)
    assert set(flatten(cfg)) == set(keys())


def test_unknown_preset():
    with pytest.raises(ConfigError, match="paper, tiny"):
        preset("huge")


def test_paper_preset_values():
    cfg = preset("paper")
    d, t, lo, ft = cfg.data, cfg.train, cfg.loss, cfg.finetune
    assert (d.clip_len, d.stride, d.size, d.batch_size) == (16, 4, 112, 16)
    assert (t.lr_per_sample, t.momentum, t.weight_decay) == (0.0005, 0.9, 0.005)
    assert (lo.sigma_p, lo.sigma_c) == (0.75, 0.75)
    assert (ft.batch_size, ft.epochs, ft.dropout, ft.lr_per_sample, ft.weight_decay) == (32, 100, 0.3, 0.0001, 0.003)
    assert cfg.model.width == 64 and cfg.model.backbone in ABLATIONS["model.backbone"]


def test_finetune_recipe_per_dataset():
    """Section IV-B: UCF101 0.0001 x B / 0.003, HMDB51 0.0002 x B / 0.002, each an explicit field; other datasets
    use the UCF101 fields. Nothing rewrites the config: the fields are what flatten (and MLflow) shows."""
    ft = preset("paper").finetune
    assert ft.recipe("hmdb51") == (0.0002, 0.002) and ft.recipe("ucf101") == (0.0001, 0.003)
    assert ft.recipe("kinetics400") == ft.recipe("ucf101")
    flat = flatten(preset("paper"))
    assert (flat["finetune.hmdb51_lr_per_sample"], flat["finetune.hmdb51_weight_decay"]) == (0.0002, 0.002)


def test_finetune_recipe_survives_unrelated_overrides():
    """Overriding an unrelated finetune field (e.g. epochs, as `--steps` does) keeps HMDB51's recipe, and the
    HMDB51 fields change HMDB51's recipe only."""
    ft = dataclasses.replace(FinetuneConfig(), epochs=10)
    assert ft.recipe("hmdb51") == (0.0002, 0.002)
    ft = apply_overrides(Config(), {"finetune.hmdb51_lr_per_sample": "0.0005"}).finetune
    assert ft.recipe("hmdb51") == (0.0005, 0.002) and ft.recipe("ucf101") == (0.0001, 0.003)
    assert preset("tiny").finetune.recipe("hmdb51") == preset("tiny").finetune.recipe("ucf101")


def test_gp_weight_presets():
    """Eq. 1 writes no coefficient on the gradient penalty: 1.0 in the paper preset; tiny keeps results/' 10."""
    assert preset("paper").loss.gp_weight == 1.0 and preset("tiny").loss.gp_weight == 10.0
    assert preset("paper").eval.retrieval_feature == preset("tiny").eval.retrieval_feature == "video_net"


@pytest.mark.parametrize("key, values", ABLATIONS.items())
def test_ablation_fields_exist_with_their_values(key, values):
    hint = field_hints()[key]
    assert typing.get_origin(hint) is typing.Literal
    assert set(typing.get_args(hint)) == set(values)
    for v in values:  # each value applies, also given as a string (study files, CLI)
        assert flatten(apply_overrides(Config(), {key: v}))[key] == v
        assert flatten(apply_overrides(Config(), {key: str(v)}))[key] == v


@pytest.mark.parametrize("key", ["loss.sigma_p", "loss.sigma_c"])
def test_sigma_fields(key):
    assert field_hints()[key] is float
    for v in (0.5, 0.75, 1.0, 1.25):
        assert flatten(apply_overrides(Config(), {key: str(v)}))[key] == v
    for bad in (-0.1, 10.5, "100"):
        with pytest.raises(ConfigError, match=key):
            apply_overrides(Config(), {key: bad})


@pytest.mark.parametrize("key", LITERAL_KEYS)
def test_every_literal_rejects_a_bad_value(key):
    valid = typing.get_args(field_hints()[key])
    with pytest.raises(ConfigError) as err:
        apply_overrides(Config(), {key: "bogus"})
    msg = str(err.value)
    assert key in msg and all(str(v) in msg for v in valid)
    # building the dataclasses directly is validated too
    section, name = key.split(".")
    sub = dataclasses.replace(getattr(Config(), section), **{name: "bogus"})
    with pytest.raises(ConfigError) as err:
        Config(**{section: sub})
    assert all(str(v) in str(err.value) for v in valid)


def test_unknown_key_suggests_the_closest_keys():
    with pytest.raises(ConfigError) as err:
        apply_overrides(Config(), {"loss.sigma_q": 1.0})
    msg = str(err.value)
    assert "loss.sigma_q" in msg and "loss.sigma_p" in msg and "loss.sigma_c" in msg and "\n" not in msg


def test_directional_datasets_refuse_flips():
    with pytest.raises(ConfigError, match="data.flip=false"):
        apply_overrides(Config(), {"data.source": "ssv2:/data/ssv2"})
    assert not apply_overrides(Config(), {"data.source": "ssv2:/data/ssv2", "data.flip": False}).data.flip


def test_other_validation():
    with pytest.raises(ConfigError, match="batch_size"):
        apply_overrides(Config(), {"data.batch_size": 1})
    with pytest.raises(ConfigError, match="cache_size"):
        apply_overrides(Config(), {"data.size": 256})
    with pytest.raises(ConfigError, match="clip_len"):
        apply_overrides(Config(), {"data.clip_len": 0})


def test_string_coercion():
    cfg = apply_overrides(Config(), {
        "data.clip_len": "8", "loss.sigma_p": "1.25", "train.amp": "false", "train.compile": "Yes",
        "train.checkpoint_epochs": "1,5, 10", "eval.retrieval_ks": "(1, 5)", "data.finetune_sources": "[a:b, c]",
        "model.pose_encoder_layer": "4", "data.max_videos": 3.0, "train.channels_last": 0})
    assert cfg.data.clip_len == 8 and type(cfg.data.clip_len) is int
    assert cfg.loss.sigma_p == 1.25 and type(cfg.loss.sigma_p) is float
    assert cfg.train.amp is False and cfg.train.compile is True and cfg.train.channels_last is False
    assert cfg.train.checkpoint_epochs == (1, 5, 10) and cfg.eval.retrieval_ks == (1, 5)
    assert cfg.data.finetune_sources == ("a:b", "c")
    assert cfg.model.pose_encoder_layer == 4 and type(cfg.model.pose_encoder_layer) is int
    assert cfg.data.max_videos == 3 and type(cfg.data.max_videos) is int


@pytest.mark.parametrize("key, value", [("data.clip_len", "eight"), ("data.clip_len", 2.5), ("train.amp", "maybe"),
                                        ("loss.sigma_p", "high"), ("train.checkpoint_epochs", "1,x")])
def test_bad_strings_fail_with_the_key(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        apply_overrides(Config(), {key: value})


def modified() -> Config:
    return apply_overrides(C.tiny(), {"model.backbone": "s3d", "loss.sigma_p": 1.25, "train.amp": False,
                                      "data.finetune_sources": ("hmdb51:/x", "ucf101:/y"),
                                      "train.checkpoint_epochs": (3,), "model.pose_encoder_layer": 2})


@pytest.mark.parametrize("make", [C.paper, C.tiny, modified])
def test_flatten_round_trip(make):
    cfg = make()
    assert from_flat(flatten(cfg)) == cfg
    assert apply_overrides(Config(), flatten(cfg)) == cfg
    # as strings, the way the CLI gives them (tuples written the CLI's way: 1,5,10)
    as_text = {k: ",".join(map(str, v)) if isinstance(v, tuple) else str(v) for k, v in flatten(cfg).items()}
    assert apply_overrides(Config(), as_text) == cfg


def test_str_of_a_string_tuple_round_trips():
    """BUG: MLflow logs str(value); str(("hmdb51:/x",)) is "('hmdb51:/x',)", and coercion keeps the quotes,
    so a config read back from MLflow params has data.finetune_sources == ("'hmdb51:/x'",)."""
    cfg = apply_overrides(Config(), {"data.finetune_sources": ("hmdb51:/x", "ucf101:/y")})
    back = apply_overrides(Config(), {"data.finetune_sources": str(cfg.data.finetune_sources)})
    assert back.data.finetune_sources == ("hmdb51:/x", "ucf101:/y")


def test_parse_overrides():
    assert parse_overrides(["loss.sigma_p=1.0", " model.backbone = s3d "]) == {"loss.sigma_p": "1.0",
                                                                              "model.backbone": "s3d"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["loss.sigma_p"])


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `python -m csvr.train ARGS`, in-process (tests/test_train_cli.py runs the
    module as a subprocess end to end; a subprocess here only added ~4 s of Python start-up per test)."""
    from csvr.train import main

    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def test_cli_help(capsys):
    code, out, err = _cli(capsys, "--help")
    assert code == 0, err
    assert "key=value" in out and "--preset" in out


def test_cli_unknown_key(tmp_path, capsys):
    code, _, err = _cli(capsys, "--out", str(tmp_path / "run"), "loss.sigma_q=1.0")
    assert code == 2
    assert "loss.sigma_q" in err and "did you mean" in err and "loss.sigma_p" in err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback
    assert not (tmp_path / "run").exists()  # nothing ran


def test_cli_bad_value_in_process(tmp_path, capsys):
    from csvr.train import main

    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(tmp_path / "run"), "model.backbone=vgg"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert all(b in err for b in ABLATIONS["model.backbone"])
