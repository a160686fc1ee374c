"""Training tests: steps lower the loss, every ablation trains, resume equals an uninterrupted run, and a
non-finite loss stops training. Uses `random_batch` (tests of the method only) and a tiny real cache.

Run: python -m pytest tests/test_training.py -q
"""
import pytest
import torch
import torch.nn.functional as F

from csvr.config import apply_overrides, tiny
from csvr.models.csvr import build_csvr
from csvr.models.integration import AdaINMapIntegration, ConcatMapIntegration
from csvr.stages.table import STAGES
from csvr.training import checkpoint as ckpt
from csvr.training.finetune import Classifier, Pretrained, feature_model
from csvr.training.loop import (NonFiniteLossError, StageState, make_optimizers, set_train_mode,
                                to_channels_last_3d, train_stage, train_step)
from csvr.training.steps import stage_terms
from tests.conftest import random_batch

torch.set_num_threads(1)
CPU = torch.device("cpu")


def tiny4(**overrides):
    return apply_overrides(tiny(), {"data.batch_size": 4, **overrides})


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(a: dict, b: dict, atol: float = 1e-6):
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            assert torch.allclose(a[k], b[k], atol=atol, rtol=0), k
        else:
            assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------------------------------------
# a few steps lower each branch's loss


@pytest.mark.parametrize("stage, steps, watched", [
    ("pose", 20, ("pose/l2",)),
    ("context", 15, ("context/loss",)),
    ("video", 15, ("reconstruct/l2", "predict/l2")),
    ("joint", 15, ("pose/l2", "context/loss", "reconstruct/l2")),
])
def test_steps_lower_the_loss(stage, steps, watched):
    cfg = tiny4(**{"train.lr_per_sample": 0.002})
    batch = random_batch(cfg)
    torch.manual_seed(0)
    model = build_csvr(cfg)
    set_train_mode(model, stage)
    opt = make_optimizers(model, stage, cfg)
    history = [train_step(model, batch, stage, cfg, opt).logs for _ in range(steps)]
    for name in watched:
        first = history[0][name].item()
        last = sum(h[name].item() for h in history[-3:]) / 3
        # pose and context can be fitted; pixel L2 to N(0, 1) targets can only fall from ~3.4 towards 3
        assert last < (0.5 * first if name in ("pose/l2", "context/loss") else first - 0.1), (name, first, last)


def test_video_stage_keeps_the_branch_encoders_frozen():
    cfg = tiny4(**{"loss.video_trains_encoders": False})  # the paper preset's literal reading
    torch.manual_seed(0)
    model = build_csvr(cfg)
    frozen = {k: v.clone() for k, v in model.state_dict().items()
              if k.startswith(("context.", "pose_generator.encoder.", "pose_generator.decoder.", "pose_discr"))}
    set_train_mode(model, "video")
    opt = make_optimizers(model, "video", cfg)
    for seed in range(2):
        train_step(model, random_batch(cfg, seed), "video", cfg, opt)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in frozen.items())  # BN running stats included


def test_video_stage_trains_the_encoders_when_told():
    """loss.video_trains_encoders=true: the same two steps move the V-network and the pose encoder (Eqs. 6-8
    reach them), in train mode; the pose decoder and D_p, which no video loss reaches, stay as they were."""
    cfg = tiny4(**{"loss.video_trains_encoders": True})
    torch.manual_seed(0)
    model = build_csvr(cfg)
    before = params(model)
    set_train_mode(model, "video", cfg)
    assert model.context.training and model.pose_generator.encoder.training
    opt = make_optimizers(model, "video", cfg)
    for seed in range(2):
        train_step(model, random_batch(cfg, seed), "video", cfg, opt)
    after = model.state_dict()
    moved = {k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])}
    assert any(k.startswith("context.video_net.") for k in moved)
    assert any(k.startswith("pose_generator.encoder.") for k in moved)
    assert not any(k.startswith(("pose_generator.decoder.", "pose_discriminator.", "context.iframe")) for k in moved)
    paper_reading = tiny4(**{"loss.video_trains_encoders": False})
    assert STAGES["video"].for_config(cfg).frozen == () and STAGES["video"].for_config(paper_reading) is STAGES["video"]


# ---------------------------------------------------------------------------------------------
# the stage table (csvr.stages.table) fits the model


def test_joint_stage_sides_are_the_models_in_model_order():
    """Order matters: a resumed stage loads its optimisers' state, which is matched to parameters by position."""
    model = build_csvr(tiny4())
    g, d = STAGES["joint"].parameters(model)
    assert [id(p) for p in g] == [id(p) for p in model.generator_parameters()]
    assert [id(p) for p in d] == [id(p) for p in model.discriminator_parameters()]


@pytest.mark.parametrize("stage", list(STAGES))
def test_each_stage_saves_what_it_trains_and_its_frozen_parts_come_from_upstream(stage):
    model, row = build_csvr(tiny4()), STAGES[stage]
    names = {id(p): n for n, p in model.named_parameters()}
    g, d = row.parameters(model)
    trained = {names[id(p)] for p in g + d}
    assert g and not {id(p) for p in g} & {id(p) for p in d}
    assert all(n.startswith(row.saves) for n in trained)  # nothing trained is lost when model.pt is written
    assert row.has_discriminator == bool(d)
    frozen = {n for path in row.frozen for n, _ in model.get_submodule(path).named_parameters(prefix=path)}
    assert not frozen & trained
    upstream_saves = tuple(s for u in row.upstream for s in STAGES[u].saves)
    assert all(n.startswith(upstream_saves) for n in frozen)  # a frozen part is a pretrained one, never random


def test_set_train_mode_puts_exactly_the_frozen_parts_in_eval_mode():
    model = build_csvr(tiny4()).eval()
    set_train_mode(model, "video")
    assert not model.context.training and not model.pose_generator.encoder.training
    assert model.pose_generator.head.training and model.reconstructor.training and model.integration.training
    set_train_mode(model, "joint")
    assert all(m.training for m in model.modules())


def test_an_unknown_stage_names_the_valid_ones():
    cfg = tiny4()
    with pytest.raises(ValueError, match="valid stages: pose, context, video, joint"):
        stage_terms(build_csvr(cfg), random_batch(cfg), "poses", cfg, mode="d")


# ---------------------------------------------------------------------------------------------
# every ablation value builds and trains


ABLATION_VALUES = [
    *[("model.backbone", v) for v in ("c3d", "r2plus1d", "r3d", "s3d")],
    *[("model.integration", v) for v in ("adain", "concat")],
    *[("model.pose_encoder_layer", v) for v in (2, 4, 6)],
    *[("loss.context", v) for v in ("mi_infonce", "infonce", "l2")],
    *[("loss.generation_target", v) for v in ("both", "reconstruct", "predict")],
    *[("loss.sigma_p", v) for v in (0.5, 0.75, 1.0, 1.25)],
    *[("loss.sigma_c", v) for v in (0.5, 0.75, 1.0, 1.25)],
    *[("train.gan_update", v) for v in ("osgan", "alternating")],
]


@pytest.mark.parametrize("key, value", ABLATION_VALUES)
def test_every_ablation_value_trains_a_joint_step(key, value):
    cfg = tiny4(**{key: value})
    batch = random_batch(cfg)
    torch.manual_seed(0)
    model = build_csvr(cfg)
    before = params(model)
    set_train_mode(model, "joint")
    terms = train_step(model, batch, "joint", cfg, make_optimizers(model, "joint", cfg))
    assert all(torch.isfinite(v).all() for v in terms.logs.values())
    expected = {"reconstruct/l2", "predict/l2"} & {"both": {"reconstruct/l2", "predict/l2"},
                                                   "reconstruct": {"reconstruct/l2"},
                                                   "predict": {"predict/l2"}}[cfg.loss.generation_target]
    assert {"pose/l2", "context/loss", *expected} <= set(terms.logs)
    assert not {"reconstruct/l2", "predict/l2"} - expected & set(terms.logs)
    after = model.state_dict()
    for part in ("context.video_net.", "context.iframe_head.", "pose_generator.decoder.", "integration.",
                 "pose_discriminator."):
        assert any(not torch.equal(v, after[k]) for k, v in before.items() if k.startswith(part)), part


def test_alternating_update_does_not_train_discriminators_in_the_generator_phase():
    cfg = tiny4(**{"train.gan_update": "alternating", "train.optimizer": "sgd", "train.weight_decay": 0.0,
                   "train.momentum": 0.0})
    torch.manual_seed(0)
    model = build_csvr(cfg)
    opt = make_optimizers(model, "pose", cfg)
    d0 = params(model.pose_discriminator)
    torch.manual_seed(1)
    d_terms = stage_terms(model, random_batch(cfg), "pose", cfg, mode="d")
    d_terms.d.backward()
    expected = {k: d0[k] - opt.d.param_groups[0]["lr"] * p.grad
                for k, p in model.pose_discriminator.named_parameters()}
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    train_step(model, random_batch(cfg), "pose", cfg, opt)
    assert_same_state(expected, params(model.pose_discriminator), atol=1e-6)


@pytest.mark.parametrize("zeroed, part", [("loss.sigma_p", "pose_generator.decoder"),
                                          ("loss.sigma_c", "context.iframe_head")])
def test_sigma_weights_its_branch(zeroed, part):
    """Eq. 9: with sigma_p = 0 (sigma_c = 0) the parts only L_pose (L_context) trains get no gradient."""
    cfg = tiny4(**{zeroed: 0.0})
    torch.manual_seed(0)
    model = build_csvr(cfg)
    terms = stage_terms(model, random_batch(cfg), "joint", cfg, mode="one_stage")
    (terms.d + terms.g).backward()
    grads = [p.grad for p in model.get_submodule(part).parameters()]
    assert all(g is None or not g.any() for g in grads)
    assert model.pose_discriminator.net[0].weight.grad.any()  # the discriminator still learns


@pytest.mark.parametrize("source", ["scratch", "f_d", "f_s", "f_i_adain", "f_i_concat", "f_i_full"])
def test_every_feature_source_finetunes_a_step(source):
    cfg = tiny4(**{"eval.feature_source": source})
    torch.manual_seed(0)
    joint = build_csvr(cfg)
    pretrained = Pretrained(pose_generator=lambda: build_csvr(cfg).pose_generator,
                            context=lambda: build_csvr(cfg).context, joint=lambda: joint)
    model = Classifier(feature_model(source, cfg, pretrained), classes=3, dropout=cfg.finetune.dropout)
    if source == "f_i_full":
        assert model.feature.integration is joint.integration
    if source in ("f_i_adain", "f_i_concat"):  # model.fi_shape=map, one per level (model.fi_levels)
        layers = model.feature.integration.levels
        assert len(layers) == cfg.model.fi_levels and all(type(layer) is {
            "f_i_adain": AdaINMapIntegration, "f_i_concat": ConcatMapIntegration}[source] for layer in layers)
    batch = random_batch(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    logits = model(batch)
    assert logits.shape == (4, 3)
    before = params(model)
    F.cross_entropy(logits, batch["label"]).backward()
    opt.step()
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in before.items() if k.startswith("feature."))


# ---------------------------------------------------------------------------------------------
# resume equals uninterrupted


def _batches(cfg):
    return lambda epoch: [random_batch(cfg, seed=10 * epoch + i) for i in range(2)]


@pytest.mark.parametrize("gan_update", ["osgan", "alternating"])
def test_resume_equals_uninterrupted(tmp_path, gan_update):
    cfg = tiny4(**{"train.gan_update": gan_update, "train.log_every": 100})
    batches = _batches(cfg)

    torch.manual_seed(0)
    straight = build_csvr(cfg)
    opt = make_optimizers(straight, "joint", cfg)
    list(train_stage(straight, "joint", cfg, batches, StageState(), 2, opt, CPU))

    torch.manual_seed(0)
    first = build_csvr(cfg)
    opt, state = make_optimizers(first, "joint", cfg), StageState()
    list(train_stage(first, "joint", cfg, batches, state, 1, opt, CPU))
    ckpt.save(tmp_path / "progress.pt", model=first.state_dict(), optim=opt.state_dict(), state=vars(state).copy(),
              rng=ckpt.rng_state())
    del first, opt

    torch.manual_seed(123)  # a different process: different init and RNG until the checkpoint is loaded
    resumed = build_csvr(cfg)
    opt = make_optimizers(resumed, "joint", cfg)
    saved = ckpt.load(tmp_path / "progress.pt")
    resumed.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optim"])
    state = StageState(**saved["state"])
    ckpt.set_rng_state(saved["rng"])
    events = list(train_stage(resumed, "joint", cfg, batches, state, 2, opt, CPU))
    assert [e["epoch"] for e in events] == [2] and state.step == 4
    assert_same_state(params(straight), params(resumed))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from tests.cachefixture import write_cache

    return write_cache(tmp_path_factory.mktemp("cache"))


def test_pipeline_stage_resume_equals_uninterrupted(cache, tmp_path):
    from csvr.stages.pretrain import pretrain_stage

    torch.set_num_threads(1)
    cfg = apply_overrides(tiny(), {"data.batch_size": 2, "data.max_videos": 4, "train.pose_epochs": 2,
                                   "train.log_every": 100})
    events = list(pretrain_stage("pose", cfg, cache, {}, tmp_path / "a", "key", CPU))
    assert [e["epoch"] for e in events if e["kind"] == "epoch"] == [1, 2]

    run = pretrain_stage("pose", cfg, cache, {}, tmp_path / "b", "key", CPU)
    for event in run:
        if event["kind"] == "epoch":
            break  # interrupted after the first epoch's checkpoint
    run.close()
    assert (tmp_path / "b" / "progress.pt").exists() and not (tmp_path / "b" / "model.pt").exists()
    rest = list(pretrain_stage("pose", cfg, cache, {}, tmp_path / "b", "key", CPU))
    assert [e["epoch"] for e in rest if e["kind"] == "epoch"] == [2]

    a, b = (ckpt.load(tmp_path / run_dir / "model.pt")["model"] for run_dir in ("a", "b"))
    assert a and all(k.startswith(("pose_generator.encoder.", "pose_generator.decoder.", "pose_discriminator."))
                     for k in a)
    assert_same_state(a, b)


# ---------------------------------------------------------------------------------------------
# non-finite losses


def test_non_finite_loss_names_the_term_and_step():
    cfg = tiny4(**{"train.log_every": 2})

    def batches(epoch):
        out = [random_batch(cfg, seed=i) for i in range(6)]
        out[2]["future_poses"][0, 0, 0, 0] = float("nan")  # the batch of step 3
        return out

    torch.manual_seed(0)
    model = build_csvr(cfg)
    events = []
    with pytest.raises(NonFiniteLossError) as err:
        for event in train_stage(model, "pose", cfg, batches, StageState(), 1, make_optimizers(model, "pose", cfg),
                                 CPU):
            events.append(event)
    assert [e["step"] for e in events] == [2]  # raised at the next log interval (step 4), not before
    msg = str(err.value)
    assert "pose/l2" in msg and "step 3" in msg


def test_every_epoch_event_carries_the_epoch_means(tiny_cfg):
    """Log intervals and epochs are separate: an epoch that ends on a log step still reports its means."""
    cfg = apply_overrides(tiny_cfg, {"train.log_every": 2})
    model = build_csvr(cfg)
    batches = lambda epoch: [random_batch(cfg, seed=epoch * 10 + i) for i in range(2)]  # noqa: E731
    events = list(train_stage(model, "context", cfg, batches, StageState(), 2, make_optimizers(model, "context", cfg),
                              torch.device("cpu")))
    assert [e["kind"] for e in events] == ["log", "epoch", "log", "epoch"]
    for log, epoch in zip(events[::2], events[1::2]):
        assert epoch["train/context/context/loss"] == pytest.approx(log["train/context/context/loss"])


def test_channels_last_3d_converts_the_3d_weights_and_keeps_the_2d_ones(tiny_cfg):
    """place_model's CUDA path: `Module.to(memory_format=channels_last_3d)` fails on the Conv2d weights (I-network,
    image generators); to_channels_last_3d converts only the 5-D weights, and the model still runs a step."""
    model = build_csvr(tiny_cfg)
    with pytest.raises(RuntimeError, match="rank 5"):
        build_csvr(tiny_cfg).to(memory_format=torch.channels_last_3d)
    to_channels_last_3d(model)
    params = list(model.parameters())
    assert any(p.dim() == 4 for p in params)
    assert all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in params if p.dim() == 5)
    terms = stage_terms(model, random_batch(tiny_cfg), "joint", tiny_cfg, mode="one_stage")
    (terms.d + terms.g).backward()
