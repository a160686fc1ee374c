"""Issue 11, item 1: each fidelity switch changes what it should and nothing else.

    loss.gp_weight                   scales D_p's gradient penalty (Eq. 1), never the generator side
    finetune.<dataset>_* recipes     what the optimiser runs is the explicit field, and what is logged
    finetune clips                   one clip of clip_len frames at the stride and span rule of EvalClips
    eval.retrieval_feature           video_net: the pretrained V-network, never a fresh integration layer

Run: python -m pytest tests/test_fidelity.py -q
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from csvr.config import DataConfig
from csvr.data import augment as A
from csvr.data import dataset as D
from tests.cachefixture import H, VIDEOS, write_cache

TRAIN_FRAMES = [n for _, _, split, n in VIDEOS if split == "train"]  # 60, 60, 10, 48


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_cache(tmp_path_factory.mktemp("cache"))


# ---------------------------------------------------------------------------------------------
# finetune clips are sampled like evaluation clips


@pytest.mark.parametrize("clip_len, stride", [(8, 4), (4, 6)])
def test_finetune_clips_have_the_eval_stride_and_span(cache, clip_len, stride):
    """For every video the finetune clip's stride equals EvalClips', and its frames lie in the span EvalClips'
    windows cover; the pretraining span (clip_len + future_len) would lower the stride of the 48-frame video."""
    evals = D.EvalClips(cache, "train", clip_len, stride, 32, clips_per_video=2)
    for train in (True, False):
        ds = D.finetune_clips(cache, "train", clip_len, stride, H, train=train, seed=3)
        for i, n in enumerate(TRAIN_FRAMES):
            got = ds[i]["frame_indices"].numpy()
            want = evals[i]["frame_indices"].numpy()  # (2, clip_len): the first and the last window
            assert got.shape == (clip_len,)
            assert set(np.diff(got)) == set(np.diff(want[0])), (n, got, want)  # same stride
            assert want[0, 0] <= got[0] and got[-1] <= want[-1, -1]  # inside the eval windows' span
    pretraining = D.ClipDataset(cache, "train", 8, 8, 4, H, train=True)
    assert set(np.diff(pretraining[3]["frame_indices"].numpy())) == {3}  # 48 frames: 16 x 4 does not fit
    assert set(np.diff(D.finetune_clips(cache, "train", 8, 4, H, train=True)[3]["frame_indices"].numpy())) == {4}


def test_finetune_clips_start_at_random_in_training_centred_otherwise(cache):
    starts = {int(D.finetune_clips(cache, "train", 4, 2, H, train=True, seed=s)[0]["frame_indices"][0])
              for s in range(8)}
    assert len(starts) > 1  # 60 frames, span 8: the start is drawn
    centred = D.finetune_clips(cache, "train", 4, 2, H, train=False)[0]["frame_indices"]
    assert int(centred[0]) == (60 - 8) // 2


def test_finetune_batch_has_the_clip_and_no_future_or_iframes(cache):
    ds = D.finetune_clips(cache, "train", 4, 2, H, train=True)
    sample = ds[0]
    assert sample["frames"].shape == (4, H, H, 3) and sample["iframe_mask"].numel() == 0
    data = DataConfig(clip_len=4, future_len=0, stride=2, size=32)
    batch = A.augment(default_collate([ds[0], ds[1]]), data, A.step_generator(0, 0, 0))
    assert batch["clip"].shape == (2, 3, 4, 32, 32) and batch["poses"].shape == (2, 4, 33, 2)
    assert batch["future"].shape[2] == 0 and batch["iframes"].shape[1] == 0
    assert torch.isfinite(batch["clip"]).all()


def test_finetune_batches_read_finetune_clips(cache):
    """The finetune stage's loader: clip_len frames per video at data.stride (48 frames: 8 x 4 fits, where the
    pretraining span 16 x 4 would have dropped to stride 3), augmented to the model's clip."""
    from csvr.config import apply_overrides, tiny
    from csvr.data.loaders import finetune_batches

    cfg = apply_overrides(tiny(), {"data.clip_len": 8, "data.future_len": 8, "data.stride": 4, "data.workers": 0})
    seen = {}
    for batch in finetune_batches(cache, cfg, 2)(0):
        assert batch["clip"].shape == (2, 3, 8, cfg.data.size, cfg.data.size)
        for i, idx in zip(batch["index"].tolist(), batch["frame_indices"].tolist()):
            seen[i] = set(np.diff(idx).tolist())
    assert seen[3] == {4} and seen[2] == {1}  # the 48- and the 10-frame video


# ---------------------------------------------------------------------------------------------
# per-dataset finetuning recipes: explicit fields, and what is logged is what ran


def finetune_events(cache, monkeypatch, tmp_path, overrides: dict) -> tuple[list[dict], object]:
    """A one-epoch, two-step scratch finetune on the fixture cache, presented as an HMDB51 dataset."""
    from csvr.config import apply_overrides, tiny
    from csvr.stages import finetune as S

    monkeypatch.setattr(S, "prepared", lambda spec, cfg: cache)
    cfg = apply_overrides(tiny(), {"eval.feature_source": "scratch", "finetune.epochs": 1, "finetune.batch_size": 2,
                                   "finetune.steps_per_epoch": 2, "data.workers": 0, **overrides})
    out = tmp_path / "ft"
    out.mkdir()
    return list(S.finetune_stage(cfg, "hmdb51:/data/HMDB51", {}, out, "key", torch.device("cpu"))), cfg


def test_hmdb51_finetune_runs_the_logged_recipe(cache, monkeypatch, tmp_path):
    from csvr.stages.finetune import recipe_metrics

    events, cfg = finetune_events(cache, monkeypatch, tmp_path, {"finetune.hmdb51_lr_per_sample": 0.003,
                                                                 "finetune.hmdb51_weight_decay": 0.0007})
    logged = recipe_metrics(cfg, "hmdb51:/data/HMDB51")
    assert logged == {"finetune/hmdb51/lr_per_sample": 0.003, "finetune/hmdb51/weight_decay": 0.0007}
    epoch = next(e for e in events if e["kind"] == "epoch")
    assert epoch["finetune/hmdb51/lr"] == pytest.approx(0.003 * 2)  # epoch 1 runs at the base lr, lr_per_sample x B


def test_recipe_field_changes_the_optimiser(tiny_cfg):
    from csvr.config import apply_overrides
    from csvr.training.finetune import make_finetune_optim

    model = torch.nn.Linear(3, 2)

    def group(overrides: dict, kind: str) -> tuple[float, float]:
        ft = apply_overrides(tiny_cfg, overrides).finetune
        g = make_finetune_optim(model, ft, kind, 5)[0].param_groups[0]
        return g["lr"] / ft.batch_size, g["weight_decay"]

    base = group({}, "hmdb51")
    assert group({"finetune.hmdb51_lr_per_sample": 0.02}, "hmdb51") == pytest.approx((0.02, base[1]))
    assert group({"finetune.hmdb51_weight_decay": 0.01}, "hmdb51") == pytest.approx((base[0], 0.01))
    assert group({"finetune.hmdb51_lr_per_sample": 0.02}, "ucf101") == pytest.approx(group({}, "ucf101"))
    paper = {"finetune.lr_per_sample": 0.0001, "finetune.weight_decay": 0.003,
             "finetune.hmdb51_lr_per_sample": 0.0002, "finetune.hmdb51_weight_decay": 0.002}
    assert group(paper, "hmdb51") == pytest.approx((0.0002, 0.002))
    assert group(paper, "ucf101") == pytest.approx((0.0001, 0.003))


# ---------------------------------------------------------------------------------------------
# retrieval reads the pretrained video network


def fixed_parts(cfg):
    """Pretrained parts built once (the loaders return the same modules every call), like loaded checkpoints."""
    from csvr.models.csvr import build_csvr
    from csvr.training.finetune import Pretrained

    torch.manual_seed(0)
    model = build_csvr(cfg).eval()
    return model, Pretrained(pose_generator=lambda: model.pose_generator, context=lambda: model.context,
                             joint=lambda: model)


@pytest.mark.parametrize("source", ["f_i_adain", "f_i_concat"])
def test_retrieval_feature_does_not_depend_on_the_fresh_integration_layer(tiny_cfg, source):
    from csvr.config import apply_overrides
    from csvr.training.finetune import retrieval_model
    from tests.conftest import random_batch

    batch = random_batch(tiny_cfg)

    def feature(mode: str, seed: int) -> torch.Tensor:
        cfg = apply_overrides(tiny_cfg, {"eval.feature_source": source, "eval.retrieval_feature": mode})
        model, pretrained = fixed_parts(cfg)
        torch.manual_seed(seed)  # what a fresh integration layer would be initialised from
        with torch.no_grad():
            return retrieval_model(cfg, pretrained).eval()(batch), model

    (a, model), (b, _) = feature("video_net", 1), feature("video_net", 2)
    assert torch.equal(a, b)
    with torch.no_grad():
        assert torch.equal(a, model.context.video_net(batch["clip"]))  # the pooled pretrained V-network
    (c, _), (d, _) = feature("source", 1), feature("source", 2)
    assert not torch.allclose(c, d)  # today's reading: a fresh layer per seed


@pytest.mark.parametrize("source, part", [("f_s", "context"), ("f_i_full", "joint"), ("f_d", "pose")])
def test_retrieval_feature_per_source(tiny_cfg, source, part):
    from csvr.config import apply_overrides
    from csvr.training.finetune import retrieval_model
    from tests.conftest import random_batch

    cfg = apply_overrides(tiny_cfg, {"eval.feature_source": source})
    model, pretrained = fixed_parts(cfg)
    batch = random_batch(cfg)
    with torch.no_grad():
        got = retrieval_model(cfg, pretrained).eval()(batch)
        if part == "pose":  # no V-network: the G_p encoder's layer-l features averaged over time
            g = model.pose_generator
            want = g.encoder(batch["poses"], batch["pose_mask"])[g.feature_layer - 1].mean(dim=2)
        else:
            want = model.context.video_net(batch["clip"])
    assert torch.equal(got, want)


# ---------------------------------------------------------------------------------------------
# loss.gp_weight


GP = "loss.gp_weight"


def test_gp_weight_scales_the_discriminator_penalty_and_nothing_else(tiny_cfg):
    """Eq. 1's WGAN-GP: D_p's loss grows linearly in gp_weight (times d_weight, Eq. 9's sigma on D_p);
    the generator's loss and its gradients do not depend on it."""
    from csvr.config import apply_overrides
    from csvr.models.csvr import build_csvr
    from csvr.training.steps import pose_terms
    from tests.conftest import random_batch

    torch.manual_seed(0)
    model = build_csvr(tiny_cfg).double().train()
    batch = {k: v.double() if v.is_floating_point() else v for k, v in random_batch(tiny_cfg).items()}
    g_params = [*model.pose_generator.encoder.parameters(), *model.pose_generator.decoder.parameters()]

    def terms(weight: float, mode: str, d_weight: float = 1.0):
        loss = apply_overrides(tiny_cfg, {GP: weight}).loss
        torch.manual_seed(1)  # same z_p and the same interpolates for every weight
        return pose_terms(model, batch, loss, mode, d_weight=d_weight)

    d = [float(terms(w, "d").d.detach()) for w in (0.0, 1.0, 10.0)]
    gp = float(terms(1.0, "d").logs["pose/gp"])
    assert gp > 0 and d[1] - d[0] == pytest.approx(gp, rel=1e-9)
    assert d[2] - d[0] == pytest.approx(10 * gp, rel=1e-9)  # linear in gp_weight
    half = [float(terms(w, "d", d_weight=0.5).d.detach()) for w in (0.0, 10.0)]
    assert half[1] - half[0] == pytest.approx(0.5 * 10 * gp, rel=1e-9)
    assert float(terms(0.0, "g").g.detach()) == float(terms(10.0, "g").g.detach())

    def generator_grads(weight: float) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        t = terms(weight, "one_stage")
        (t.d + t.g).backward()
        return [p.grad.clone() for p in g_params if p.grad is not None]

    low, high = generator_grads(0.0), generator_grads(10.0)
    assert low and all(torch.allclose(a, b, rtol=1e-9, atol=1e-12) for a, b in zip(low, high))


# ---------------------------------------------------------------------------------------------
# python -m csvr.train --preset tiny --steps 2 --set <key>=<value> runs for every new value


NEW_VALUES = [("loss.gp_weight", "1.0"), ("finetune.hmdb51_lr_per_sample", "0.0003"),
              ("finetune.hmdb51_weight_decay", "0.001"), ("eval.retrieval_feature", "source"),
              ("eval.retrieval_feature", "video_net"), ("loss.video_adversarial", "1.0"),
              ("loss.pose_adversarial", "0.5")]
# two runs cover every value (one key takes two values): a run per value cost a minute of the suite
RUNS = [[kv for kv in NEW_VALUES if kv != ("eval.retrieval_feature", "video_net")],
        [("eval.retrieval_feature", "video_net")]]


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")  # one stage store: eval-only values reuse the pretraining stages


@pytest.mark.slow
@pytest.mark.parametrize("values", RUNS, ids=["all-but-video_net", "video_net"])
def test_train_cli_runs_with_each_new_value(runs_root, monkeypatch, capsys, values):
    import json

    from csvr import train
    from csvr.config import flatten, from_flat

    monkeypatch.setattr(train, "RUNS", runs_root)
    sets = [arg for key, value in values for arg in ("--set", f"{key}={value}")]
    # 8 train / 8 test videos (as --smoke): evaluating every embedded video was most of each run's time
    assert train.main(["--preset", "tiny", "--steps", "2", "--set", "data.max_videos=8", *sets]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    result = next(e for e in lines if e["kind"] == "result")
    assert 0.0 <= result["eval/synthetic/retrieval_r1"] <= 1.0 and "eval/synthetic/top1" in result
    ran = json.loads((train.latest_run_dir(runs_root) / "artifacts" / "config.json").read_text())
    for key, value in values:  # what ran is what was set
        section, name = key.split(".")
        assert flatten(from_flat({key: ran[section][name]}))[key] == flatten(from_flat({key: value}))[key]
