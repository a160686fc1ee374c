"""The CSVR model, assembled from injected parts (Fig. 1).

    CSVR(context, pose_generator, pose_discriminator, integration, reconstructor, predictor)

`build_csvr(cfg)` makes the parts from a `Config`; tests pass tiny parts directly. Ablations swap parts
(`model.integration`, `model.backbone`, `model.pose_encoder_layer`) rather than adding flags here.
"""
from __future__ import annotations

from torch import Tensor, nn

from csvr.config import Config
from csvr.models.backbones import build_video_net, r2d10
from csvr.models.context import ContextBranch
from csvr.models.integration import build_integration
from csvr.models.pose_gan import PoseDiscriminator, PoseGenerator, build_pose_gan
from csvr.models.video_gan import VideoGAN, build_video_gan


class CSVR(nn.Module):
    def __init__(self, context: ContextBranch, pose_generator: PoseGenerator, pose_discriminator: PoseDiscriminator,
                 integration: nn.Module, reconstructor: VideoGAN, predictor: VideoGAN):
        super().__init__()
        self.context = context
        self.pose_generator, self.pose_discriminator = pose_generator, pose_discriminator
        self.integration = integration
        self.reconstructor, self.predictor = reconstructor, predictor

    def features(self, clip: Tensor, poses: Tensor, pose_mask: Tensor) -> dict[str, Tensor]:
        """f_d (pose encoder) and f_s (V-network + g^V), each (B, C), and f_i (integration layer): (B, C), or
        (B, C, T', H', W') with `model.fi_shape=map` (`pooled(f_i)` is the vector)."""
        f_d = self.pose_generator.motion_feature(poses, pose_mask)
        v_map, f_s = self.context.video_features(clip)
        return {"f_d": f_d, "f_s": f_s, "f_i": self.integration(f_d, f_s, v_map)}

    def discriminators(self) -> list[nn.Module]:
        return [self.pose_discriminator, self.reconstructor.discriminator, self.predictor.discriminator]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return [p for d in self.discriminators() for p in d.parameters()]

    def generator_parameters(self) -> list[nn.Parameter]:
        """Everything that is not a discriminator: encoders, heads, integration layer, generators."""
        d_ids = {id(p) for p in self.discriminator_parameters()}
        return [p for p in self.parameters() if id(p) not in d_ids]


def build_context(cfg: Config) -> ContextBranch:
    m = cfg.model
    return ContextBranch(build_video_net(m.backbone, m.width), r2d10(m.width), m.feature_dim, m.head_hidden,
                         m.fi_levels)


def build_pose(cfg: Config) -> tuple[PoseGenerator, PoseDiscriminator]:
    m, d = cfg.model, cfg.data
    return build_pose_gan(m.joints, m.pose_channels, d.clip_len, d.future_len, m.pose_noise_dim,
                          m.feature_dim, m.head_hidden, m.pose_encoder_layer)


def fi_map_dims(cfg: Config, context: ContextBranch) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(channels of each V-network map the integration layer reads, coarsest first; sizes of the finer maps, where
    they join the generators), for `model.fi_levels`. One level needs no dry run: its channels are `out_dim`."""
    if cfg.model.fi_levels == 1:
        return (context.video_net.out_dim,), ()
    shapes = context.video_net.map_shapes(cfg.model.fi_levels, cfg.data.clip_len, cfg.data.size)
    return tuple(c for c, *_ in shapes), tuple(h for _, _, h, _ in shapes[1:])


def build_integration_for(cfg: Config, context: ContextBranch, kind: str | None = None) -> nn.Module:
    """The integration layer (`model.integration`, or `kind`) over `context`'s V-network maps."""
    channels, _ = fi_map_dims(cfg, context)
    return build_integration(kind or cfg.model.integration, cfg.model.fi_shape, cfg.model.feature_dim, channels)


def build_video_branch(cfg: Config, context: ContextBranch) -> tuple[nn.Module, VideoGAN, VideoGAN]:
    """The integration layer, the reconstructor and the predictor over `context`'s V-network."""
    m, d = cfg.model, cfg.data
    channels, skip_sizes = fi_map_dims(cfg, context)
    gan = lambda frames: build_video_gan(m.feature_dim, m.video_noise_dim, frames, d.size,  # noqa: E731
                                         m.gen_channels, m.disc_channels, m.video_gan, m.video_levels,
                                         spatial=m.fi_shape == "map", skip_sizes=skip_sizes)
    integration = build_integration(m.integration, m.fi_shape, m.feature_dim, channels)
    return integration, gan(d.clip_len), gan(d.future_len)


def build_csvr(cfg: Config) -> CSVR:
    pose_g, pose_d = build_pose(cfg)
    context = build_context(cfg)
    return CSVR(context, pose_g, pose_d, *build_video_branch(cfg, context))
