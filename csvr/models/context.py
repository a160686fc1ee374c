"""Context matching branch (Section III-C, Eq. 2): V-network and I-network with two-layer MLP heads.

x_i* = g^V(pool(V(clip_i)))  -- the static context feature f_s (B, C); V(clip_i) before pooling is the map
                               the integration layer reads when model.fi_shape=map
z_i* = g^I(pool(I(iframe)))  -- I-frame embeddings (B, K, C)
The backbones (`csvr.models.backbones`) already end in global average pooling.
"""
from __future__ import annotations

from torch import Tensor, nn

from csvr.models.backbones import global_pool


def mlp_head(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """The two-layer MLP heads g^V and g^I."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_dim))


class ContextBranch(nn.Module):
    def __init__(self, video_net: nn.Module, iframe_net: nn.Module, feature_dim: int, hidden: int,
                 map_levels: int = 1):
        super().__init__()
        self.video_net, self.iframe_net = video_net, iframe_net
        self.map_levels = map_levels  # model.fi_levels: how many of the V-network's maps video_features returns
        self.video_head = mlp_head(video_net.out_dim, hidden, feature_dim)  # g^V
        self.iframe_head = mlp_head(iframe_net.out_dim, hidden, feature_dim)  # g^I

    def video_embedding(self, clip: Tensor) -> Tensor:
        """clip (B, 3, T, H, W) -> f_s = x* (B, C)."""
        return self.video_head(self.video_net(clip))

    def video_features(self, clip: Tensor) -> tuple[Tensor | tuple[Tensor, ...], Tensor]:
        """clip -> (the V-network's map before pooling (B, C', T', H', W'), f_s = x* (B, C)), in one pass. With
        `map_levels` > 1 the first item is a tuple of maps, coarsest first (`PooledNet.maps`): [0] is that map."""
        if self.map_levels == 1:
            v_map = self.video_net.features(clip)
            return v_map, self.video_head(global_pool(v_map))
        maps = tuple(self.video_net.maps(clip, self.map_levels))
        return maps, self.video_head(global_pool(maps[0]))

    def iframe_embedding(self, iframes: Tensor) -> Tensor:
        """iframes (B, K, 3, H, W) -> z* (B, K, C); padded slots are embedded too and masked by the loss."""
        b, k = iframes.shape[:2]
        return self.iframe_head(self.iframe_net(iframes.flatten(0, 1))).view(b, k, -1)
