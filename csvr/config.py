"""Typed configuration for CSVR: one frozen dataclass per concern, nested once in `Config`.

Every field has one dotted key (`loss.sigma_p`, `model.backbone`, ...). That key is what a study's
search space uses, what `apply_overrides` accepts on the command line (`loss.sigma_p=1.0`), what
MLflow records as a param and what `analysis/` prints as a table column. Nothing renames it.

    cfg = preset("tiny")
    cfg = apply_overrides(cfg, {"model.backbone": "s3d", "loss.sigma_p": 1.0})
    flat = flatten(cfg)          # {"model.backbone": "s3d", "loss.sigma_p": 1.0, ...}
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, Mapping

Backbone = Literal["c3d", "r2plus1d", "r3d", "s3d"]
Integration = Literal["adain", "concat"]
FiShape = Literal["map", "vector"]  # model.fi_shape (csvr.models.integration)
ContextLoss = Literal["mi_infonce", "infonce", "l2"]
GenerationTarget = Literal["both", "reconstruct", "predict"]
FeatureSource = Literal["scratch", "f_d", "f_s", "f_i_adain", "f_i_concat", "f_i_full"]
RetrievalFeature = Literal["video_net", "source"]
GanUpdate = Literal["osgan", "alternating"]
VideoGanKind = Literal["tgan2", "single"]  # model.video_gan (csvr.models.video_gan)
Device = Literal["auto", "cpu", "cuda"]

DIRECTIONAL = ("ssv2",)  # datasets with classes defined by a direction: a horizontal flip changes the label
SIGMA_RANGE = (0.0, 10.0)  # a sigma outside this is almost certainly a typo (the paper searches 0.5-1.25)


class ConfigError(ValueError):
    """An unknown key, a bad value or an inconsistent combination; the message says what is valid."""


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"  # KIND:PATH (ucf101:/data/UCF101, hmdb51:..., folder:..., synthetic)
    finetune_sources: tuple[str, ...] = ()  # downstream datasets; empty = finetune on `source`
    cache_root: str = ""  # where prepared caches live; "" = $CSVR_HOME/cache
    cache: str = ""  # a folder `python -m csvr.prepare --cache DIR` wrote for `source`; "" = under cache_root
    cache_size: int = 128  # short side of prepared frames (prepare resizes once, offline)
    split: int = 1  # official split number (UCF101 / HMDB51)
    clip_len: int = 16  # T: frames in the current clip (and the input pose sequence)
    future_len: int = 16  # T': frames in the future clip (and the future pose sequence)
    stride: int = 4  # temporal stride between sampled frames
    size: int = 112  # crop size fed to the networks
    flip: bool = True  # random horizontal flips (p = 0.5); off where classes are defined by direction (SSv2)
    batch_size: int = 16
    workers: int = 2  # loader worker processes
    max_videos: int = 0  # 0 = all; >0 keeps the first N train/test videos (smoke runs)


@dataclass(frozen=True)
class ModelConfig:
    backbone: Backbone = "r2plus1d"  # V-network
    width: int = 64  # base channel width of the V-network and the I-network (64 = the paper's nets)
    feature_dim: int = 512  # C: size of f_s, f_d and f_i
    head_hidden: int = 2048  # hidden width of the two-layer MLP heads g^V and g^I
    integration: Integration = "adain"  # Table I: AdaIN (Eqs. 3-5) or concat + conv
    # Section III-D, Eqs. 3-5 and [118]: f_s enters the integration layer as the V-network's feature map, so f_i is a
    # map the generators render from; vector = the pooled x* (DESIGN.md, "f_i as a map")
    fi_shape: FiShape = "map"
    # how many of the V-network's maps, from its last resolution back, enter the integration layer, each with its own
    # AAD layer, and join the generators at their own resolution (FaceShifter's multi-level attributes [118]);
    # 1 = Section III-D's one integration layer on the last map (DESIGN.md, "f_i at several levels")
    fi_levels: int = 1
    pose_encoder_layer: Literal[2, 4, 6] = 6  # Table III: which G_p encoder layer gives f_d
    pose_channels: int = 256  # width of the 1D pose CNNs
    pose_noise_dim: int = 64  # z_p
    video_noise_dim: int = 128  # z_v^r, z_v^p
    gen_channels: int = 256  # base width of the TGAN-v2-style generators
    disc_channels: int = 64  # base width of the R3D-style video discriminators
    # Section III-D, "based on TGAN v2": tgan2 = TGAN-v2 as published (multi-level rendering, frame subsampling between
    # levels, one 3D-ResNet discriminator per level); single = one level, one discriminator (DESIGN.md, "TGAN-v2 as
    # published (Section III-D)")
    video_gan: VideoGanKind = "tgan2"
    video_levels: int = 0  # tgan2 rendering levels; 0 = derived: up to 4, coarsest >= 8 px (112 -> 4, 32 -> 3)
    joints: int = 33  # MediaPipe Pose landmarks


@dataclass(frozen=True)
class LossConfig:
    context: ContextLoss = "mi_infonce"  # Table IV
    generation_target: GenerationTarget = "both"  # Table V
    sigma_p: float = 0.75  # Eq. 9 weight of L_pose (Fig. 3)
    sigma_c: float = 0.75  # Eq. 9 weight of L_context (Fig. 3)
    temperature: float = 0.07  # tau in Eq. 2
    context_negatives: int = 3  # negative I-frames per anchor, from other videos (Section IV-B: three); 0 = all
    gp_weight: float = 1.0  # WGAN-GP weight on D_p's side; Eq. 1 writes no coefficient: 1.0 is the literal one
    pose_l2: float = 1.0  # weight of the pose L2 term in Eq. 1
    video_l2: float = 1.0  # weight of the pixel L2 terms in Eqs. 6-7
    pose_adversarial: float = 1.0  # weight of the adversarial terms of Eq. 1 against its L2 (pose_l2)
    # weight of the adversarial terms of Eqs. 6-7 against their pixel L2 (video_l2). The paper writes 1 : 1 but not
    # the pixel units of its L2 ([0, 255] makes the L2 ~3000x larger than in our normalised space, [0, 1] ~20x
    # smaller), so the balance is open (DESIGN.md, "The video GANs' balance"); the paper preset keeps 1.
    video_adversarial: float = 1.0
    # Section IV-B pretrains "TGAN v2 ... with [its] training objectives" before the joint stage: False (the literal
    # reading) trains the generators (and the integration layer, f_d's head) on frozen encoders; True lets Eqs. 6-8's
    # gradients reach the pose encoder and the V-network already in that stage (DESIGN.md, "f_i at several levels")
    video_trains_encoders: bool = False
    # Eq. 9 weights the whole min-max L_pose by sigma_p: True also scales D_p's loss (and its gradient penalty), the
    # literal reading (DESIGN.md, "Eq. 9 and the discriminators"); False scales only the generator side.
    sigma_scales_discriminator: bool = True


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    device: Device = "auto"
    gan_update: GanUpdate = "osgan"
    optimizer: Literal["sgd", "adam"] = "sgd"  # pretraining optimiser; Section IV-B: SGD (adam: betas 0.5, 0.999)
    lr_per_sample: float = 0.0005  # lr = 0.0005 x B
    momentum: float = 0.9
    weight_decay: float = 0.005
    pose_epochs: int = 20  # branch pretraining of the pose CGAN
    context_epochs: int = 20  # branch pretraining of the context branch
    video_epochs: int = 20  # branch pretraining of the video GANs (on frozen f_d, f_s)
    joint_epochs: int = 200  # joint pretraining with Eq. 9
    steps_per_epoch: int = 0  # 0 = one pass over the train split
    log_every: int = 10  # steps between host syncs / metric lines
    checkpoint_epochs: tuple[int, ...] = (1, 5, 10, 20, 50, 120)  # kept for Table II
    amp: bool = True  # bf16 autocast on CUDA (ignored on the CPU)
    channels_last: bool = True  # channels_last_3d on CUDA
    compile: bool = False  # torch.compile the V-network


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 100
    batch_size: int = 32
    # Section IV-B, Finetuning: one recipe per dataset, each an explicit field; `recipe(dataset)` picks one
    lr_per_sample: float = 0.0001  # UCF101 (and any dataset without its own fields): lr = 0.0001 x B
    weight_decay: float = 0.003  # UCF101 (and any dataset without its own fields)
    hmdb51_lr_per_sample: float = 0.0002  # HMDB51: lr = 0.0002 x B
    hmdb51_weight_decay: float = 0.002  # HMDB51
    momentum: float = 0.9
    dropout: float = 0.3
    steps_per_epoch: int = 0
    # label-scarce regime: >0 = only the first N train videos of each class carry labels (finetuning data, the k-NN
    # gallery and the linear probe's data); pretraining still sees every train video, unlabelled
    labels_per_class: int = 0

    def recipe(self, dataset_kind: str) -> tuple[float, float]:
        """(lr_per_sample, weight_decay) that finetuning on `dataset_kind` uses: HMDB51's own fields, else the
        UCF101 fields (the paper gives recipes for these two only)."""
        own = {"hmdb51": (self.hmdb51_lr_per_sample, self.hmdb51_weight_decay)}
        return own.get(dataset_kind, (self.lr_per_sample, self.weight_decay))


@dataclass(frozen=True)
class EvalConfig:
    feature_source: FeatureSource = "f_i_full"  # Table I
    protocol: Literal["finetune", "linear", "knn"] = "finetune"  # finetune = the paper's; linear / knn: frozen features
    pretrained: bool = True  # False: the same feature source, randomly initialised (the frozen-feature baseline)
    knn_k: int = 10  # neighbours of the cosine k-NN (DINO's weighted vote, temperature knn_temperature)
    knn_temperature: float = 0.07
    probe_every: int = 0  # k-NN probe (probe/<dataset>/knn_top1) every N pretraining epochs; 0 = off
    pretrain_epoch: int = 0  # 0 = the last joint epoch; else a kept checkpoint (Table II)
    retrieval_clips: int = 10  # clips per video, sliding window
    retrieval_ks: tuple[int, ...] = (1, 5, 10, 20)
    # Section IV-B: retrieval queries with the "global features" of the "pretrained video network": video_net =
    # the pooled V-network the feature source pretrained (f_d: the pooled G_p encoder, there is no V-network);
    # source = the feature of eval.feature_source itself (f_i_adain / f_i_concat pass a fresh integration layer)
    retrieval_feature: RetrievalFeature = "video_net"
    test_clips: int = 10  # clips per test video for recognition (averaged softmax)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        validate(self)


# ---------------------------------------------------------------------------------------------
# presets


def paper() -> Config:
    """Section IV-B: 16x112x112 clips at stride 4, batch 16, SGD 0.0005 x B, sigma_p = sigma_c = 0.75."""
    return Config()


def tiny() -> Config:
    """The same model family shrunk to run on 2 CPU cores in a few minutes (README: "The tiny preset").

    The video GANs stay single-level (`model.video_gan=single`: one generator level, one discriminator per GAN),
    as results/ was measured, so it reproduces; the paper preset builds TGAN-v2 as published (Section III-D).

    What differs from the paper besides size, and why (DESIGN.md, "Making CSVR learn at the tiny size"):
    Adam (betas 0.5, 0.999) instead of SGD, because SGD at the paper's lr rule diverged or stalled on the
    video GANs within the few hundred steps a CPU affords; branch pretraining long enough for each branch to
    beat its trivial baseline; frozen-feature k-NN evaluation (`eval.protocol=knn`), which is cheap and has
    no finetuning noise; a k-NN probe every 5 pretraining epochs; sigma on the generator side only and every
    other clip's I-frames as negatives (loss.sigma_scales_discriminator=false, loss.context_negatives=0: how
    results/ was measured); a WGAN-GP weight of 10 (loss.gp_weight=10, the value results/ was measured with; the
    paper preset's 1.0 is Eq. 1's literal, unwritten coefficient); one finetuning recipe for every dataset (the
    HMDB51 fields equal the UCF101 ones); the video GANs' adversarial terms at 1/100 of their L2
    (loss.video_adversarial=0.01, pix2pix's balance) and 80 video epochs: at weight 1 the adversarial game drew
    texture noise and stayed at the unconditional baseline for 600 steps, with 1/100 the generators learn the scene
    and the body (DESIGN.md, "The video GANs' balance"); 60 context epochs (480 steps): at 20 the context branch
    had learned which scene a clip shows but hardly which video, and its f_s lost to a random V-network on the
    context classes (DESIGN.md, "Making CSVR learn at the tiny size"); f_i at all four V-network resolutions
    (model.fi_levels=4, FaceShifter's multi-level integration [118]) and a video stage whose Eqs. 6-8 also train the
    encoders (loss.video_trains_encoders=true): with one level and frozen encoders the generators cannot beat the
    clip-mean-frame baselines, with both they do, and the frozen f_i's k-NN is no worse (DESIGN.md, "f_i at several
    levels"). Each results/ table says which of these settings it was measured with."""
    return Config(
        data=DataConfig(cache_size=64, clip_len=8, future_len=8, stride=2, size=32, batch_size=8, workers=0),
        model=ModelConfig(width=8, feature_dim=32, head_hidden=64, pose_channels=32, pose_noise_dim=8,
                          video_noise_dim=16, gen_channels=32, disc_channels=8, video_gan="single", fi_levels=4),
        train=TrainConfig(pose_epochs=30, context_epochs=60, video_epochs=80, joint_epochs=5, optimizer="adam",
                          lr_per_sample=0.0001, weight_decay=0.0, log_every=8, checkpoint_epochs=(1, 5)),
        # results/feature_source_knn.md was measured with sigma on the generator side only: kept, to reproduce it
        loss=LossConfig(sigma_scales_discriminator=False, context_negatives=0, gp_weight=10.0, video_adversarial=0.01,
                        video_trains_encoders=True),
        finetune=FinetuneConfig(epochs=20, batch_size=8, lr_per_sample=0.005, weight_decay=0.0005,
                                hmdb51_lr_per_sample=0.005, hmdb51_weight_decay=0.0005),
        eval=EvalConfig(protocol="knn", retrieval_clips=1, test_clips=2, probe_every=5),
    )


PRESETS = {"paper": paper, "tiny": tiny}


def preset(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[name]()


# ---------------------------------------------------------------------------------------------
# dotted keys


def flatten(cfg: Config) -> dict[str, Any]:
    """{"data.clip_len": 16, ...}: the one namespace shared by studies, MLflow params and tables."""
    out: dict[str, Any] = {}
    for section in fields(cfg):
        sub = getattr(cfg, section.name)
        for f in fields(sub):
            out[f"{section.name}.{f.name}"] = getattr(sub, f.name)
    return out


def keys() -> list[str]:
    return list(flatten(Config()))


def unknown_key(key: str, valid: list[str]) -> str:
    """"unknown config key 'loss.sigmap'; did you mean loss.sigma_p?" (the closest keys, difflib)."""
    section, _, name = key.rpartition(".")
    same_field = [k for k in valid if k.split(".")[-1] == name]  # the section was missing or wrong
    prefix = [k for k in valid if k.startswith(f"{section}.{name}")] if len(name) >= 2 else []
    close = list(dict.fromkeys(same_field + prefix + difflib.get_close_matches(key, valid, n=2, cutoff=0.75)))[:3]
    if close:
        return f"unknown config key {key!r}; did you mean {' or '.join(close)}?"
    sections = sorted({k.split(".")[0] for k in valid})
    return (f"unknown config key {key!r}; keys are SECTION.FIELD with SECTION one of {', '.join(sections)} "
            "(all of them: python -c 'from csvr.config import keys; print(keys())')")


def apply_overrides(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    """Return `cfg` with dotted-key overrides applied; strings are parsed to the field's type."""
    sections: dict[str, dict[str, Any]] = {}
    valid = keys()
    for key, value in overrides.items():
        if key not in valid:
            raise ConfigError(unknown_key(key, valid))
        section, name = key.split(".", 1)
        hint = _field_types(type(getattr(cfg, section)))[name]
        sections.setdefault(section, {})[name] = _coerce(key, value, hint)
    changed = {s: replace(getattr(cfg, s), **kv) for s, kv in sections.items()}
    return replace(cfg, **changed)


def parse_overrides(items: list[str]) -> dict[str, str]:
    """["loss.sigma_p=1.0", ...] -> {"loss.sigma_p": "1.0"}"""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. loss.sigma_p=1.0)")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def from_flat(flat: Mapping[str, Any], base: Config | None = None) -> Config:
    return apply_overrides(base or Config(), flat)


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


# ---------------------------------------------------------------------------------------------
# validation and coercion


def validate(cfg: Config) -> None:
    for section in fields(cfg):
        sub = getattr(cfg, section.name)
        for name, hint in _field_types(type(sub)).items():
            _check_literal(f"{section.name}.{name}", getattr(sub, name), hint)
    for key in ("sigma_p", "sigma_c"):
        v = getattr(cfg.loss, key)
        if not SIGMA_RANGE[0] <= v <= SIGMA_RANGE[1]:
            raise ConfigError(f"loss.{key}={v} is out of range {list(SIGMA_RANGE)}; the paper uses 0.5-1.25")
    _check_video_levels(cfg.model, cfg.data)
    if cfg.model.fi_levels < 1:
        raise ConfigError(f"model.fi_levels must be >= 1 (1 = the V-network's last map), got {cfg.model.fi_levels}")
    if cfg.model.fi_levels > 1 and cfg.model.fi_shape != "map":
        raise ConfigError(f"model.fi_levels={cfg.model.fi_levels} integrates V-network maps; it needs "
                          "model.fi_shape=map (or set model.fi_levels=1)")
    if cfg.loss.context_negatives < 0:
        raise ConfigError(f"loss.context_negatives must be >= 0 (0 = all), got {cfg.loss.context_negatives}")
    d = cfg.data
    for key in ("clip_len", "future_len", "stride", "size", "batch_size", "cache_size"):
        if getattr(d, key) < 1:
            raise ConfigError(f"data.{key} must be >= 1, got {getattr(d, key)}")
    if d.size > d.cache_size:
        raise ConfigError(f"data.size={d.size} is larger than data.cache_size={d.cache_size}; "
                          "prepare the cache at a larger size or crop smaller")
    if d.batch_size < 2:
        raise ConfigError("data.batch_size must be >= 2: the contrastive loss needs negatives")
    if d.flip and d.source.split(":", 1)[0].lower() in DIRECTIONAL:
        raise ConfigError(f"data.flip=true mirrors {d.source.split(':', 1)[0]}'s direction classes (\"left to right\" "
                          "becomes \"right to left\"); set data.flip=false")


def _check_video_levels(m: ModelConfig, d: DataConfig) -> None:
    """An explicit `model.video_levels` L must halve size and frames exactly L - 1 times (TGAN-v2 subsampling)."""
    if m.video_levels < 0:
        raise ConfigError(f"model.video_levels must be >= 0 (0 = derived from data.size), got {m.video_levels}")
    step = 2 ** max(m.video_levels - 1, 0)
    bad = [f"data.{k}={getattr(d, k)}" for k in ("size", "clip_len", "future_len") if getattr(d, k) % step]
    if m.video_gan == "tgan2" and bad:
        raise ConfigError(f"model.video_levels={m.video_levels} halves sizes and frames {m.video_levels - 1} times: "
                          f"{', '.join(bad)} not divisible by {step}; use fewer levels or 0 (derived)")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _check_literal(key: str, value: Any, hint: Any) -> None:
    if typing.get_origin(hint) is Literal and value not in typing.get_args(hint):
        valid = ", ".join(str(v) for v in typing.get_args(hint))
        raise ConfigError(f"{key}={value!r} is not valid; valid values: {valid}")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    try:
        if origin is Literal:
            choices = typing.get_args(hint)
            for choice in choices:
                if value == choice or str(value) == str(choice):
                    return choice
            raise ConfigError(f"{key}={value!r} is not valid; valid values: {', '.join(map(str, choices))}")
        if origin is tuple:
            (item_type, _) = typing.get_args(hint)
            if isinstance(value, str):
                value = [v for v in value.strip("()[] ").split(",") if v.strip()]
            return tuple(item_type(v.strip().strip("'\"")) if isinstance(v, str) else item_type(v) for v in value)
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ConfigError(f"{key}={value!r} is not a boolean (true/false)")
            return bool(value)
        if hint in (int, float, str):
            if hint is int and isinstance(value, float) and not value.is_integer():
                raise ConfigError(f"{key}={value!r} must be an integer")
            return hint(value)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{key}={value!r} cannot be read as {getattr(hint, '__name__', hint)}: {err}") from None
    return value
