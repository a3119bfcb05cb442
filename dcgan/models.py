"""DCGAN generator and discriminator (paper §3, Figure 1; init from §4).

The four architecture guidelines of §3 are the defaults:

1. no pooling: strided convolutions in D, transposed convolutions in G;
2. no fully connected hidden layers: G's first layer maps z to a 4x4 map
   (a transposed 4x4 convolution of a 1x1 input is exactly the paper's
   "matrix multiply reshaped to a 4-D tensor"), D's last layer is one 4x4
   convolution to a single logit;
3. BatchNorm everywhere except G's output and D's input layer;
4. ReLU in G with Tanh on the output, LeakyReLU(0.2) in D.

Each guideline can be switched off through :class:`ModelConfig` for the
stability ablations of chapter 08. D returns *logits*; the sigmoid of the
paper lives in the loss (``BCEWithLogits``), which is the same function and
numerically safer under bf16.

Both nets expose their per-layer activations (``activations``), which the
feature (§5), internals (§6) and metrics chapters use.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

__all__ = [
    "ModelConfig",
    "Generator",
    "Discriminator",
    "weights_init",
    "sample_noise",
    "build_models",
    "count_parameters",
    "layer_table",
    "check_guidelines",
]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a DCGAN pair.

    ``ngf``/``ndf`` set the width of G's last and D's first hidden layer;
    widths double towards the 4x4 end. At 64x64 with ``ngf=64`` G's top layer
    is 4x4x512 (the common choice); ``ngf=128`` gives the paper's Figure 1
    (4x4x1024).
    """

    image_size: int = 64
    channels: int = 3
    nz: int = 100
    ngf: int = 64
    ndf: int = 64
    z_dist: Literal["uniform", "normal"] = "uniform"  # paper: uniform in [-1, 1]
    bn_affine: bool = True  # §8.1: removing BN scale/bias helped on MNIST
    n_classes: int = 0  # >0: label-conditional G and D (§8.1)
    leaky_slope: float = 0.2
    # Ablation switches (chapter 08); the defaults follow the paper.
    pooling: bool = False  # True: D conv+max-pool, G upsample+conv
    batchnorm: bool = True  # False: no BatchNorm anywhere
    bn_everywhere: bool = False  # True: BN also on G's output and D's input
    d_activation: Literal["leaky", "relu"] = "leaky"
    fc_hidden: int = 0  # >0: a fully connected hidden layer of this width in G and D
    # The authors' released nets (dcgan.authors): 5x5 kernels (stride 2, padding 2; G's transposed convs add
    # output_padding 1), G's first BatchNorm per unit of its 4x4 map (their dense layer's BN) and BN's epsilon.
    # Left at these defaults the fields are not written by to_dict (so the cache keys of every run stay the same).
    kernel_size: int = 4
    g_unit_bn: bool = False
    bn_eps: float = 1e-5

    def __post_init__(self) -> None:
        s = self.image_size
        if s < 16 or s & (s - 1):
            raise ValueError(
                f"image_size must be a power of two >= 16 (the nets halve/double it down to 4x4), got {s}; "
                "resize your data to 16, 32, 64, 128, ..."
            )
        if self.channels < 1 or self.nz < 1 or self.ngf < 1 or self.ndf < 1:
            raise ValueError("channels, nz, ngf and ndf must be positive")
        if self.z_dist not in ("uniform", "normal"):
            raise ValueError(f"z_dist must be 'uniform' or 'normal', got {self.z_dist!r}")
        if self.d_activation not in ("leaky", "relu"):
            raise ValueError(f"d_activation must be 'leaky' or 'relu', got {self.d_activation!r}")
        if self.kernel_size not in (4, 5):
            raise ValueError(f"kernel_size must be 4 (ours) or 5 (the authors' released nets), got {self.kernel_size}")
        if not self.bn_eps > 0:
            raise ValueError(f"bn_eps must be positive, got {self.bn_eps}")

    @property
    def n_layers(self) -> int:
        """Number of resolution changes between 4x4 and ``image_size``."""
        return int(math.log2(self.image_size)) - 2

    def g_widths(self) -> list[int]:
        """Channel widths of G's hidden maps, from 4x4 up."""
        return [self.ngf * 2 ** (self.n_layers - 1 - i) for i in range(self.n_layers)]

    def d_widths(self) -> list[int]:
        """Channel widths of D's conv maps, from the input side down to 4x4."""
        return [self.ndf * 2**i for i in range(self.n_layers)]

    def to_dict(self) -> dict:
        """The fields; the later extensions (``EXTENSIONS``) only when they differ from their defaults."""
        d = asdict(self)
        for k, default in EXTENSIONS.items():
            if d[k] == default:
                del d[k]
        return d


# Fields added after the cache keys of the book's runs were fixed, with their defaults (see ModelConfig.to_dict).
EXTENSIONS = {"kernel_size": 4, "g_unit_bn": False, "bn_eps": 1e-5}


def _norm(cfg: ModelConfig, ch: int) -> nn.Module:
    if not cfg.batchnorm:
        return nn.Identity()
    return nn.BatchNorm2d(ch, eps=cfg.bn_eps, affine=cfg.bn_affine)


def _conv_geometry(cfg: ModelConfig) -> dict:
    """Kernel and padding of a resolution-halving conv (and of its transposed, doubling twin)."""
    return {"kernel_size": 4, "padding": 1} if cfg.kernel_size == 4 else {"kernel_size": 5, "padding": 2}


class Generator(nn.Module):
    """z (N, nz) -> image (N, C, S, S) in [-1, 1].

    ``blocks[i]`` outputs the i-th hidden map (4x4 first); ``out`` maps the
    last hidden map to the image.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        widths = cfg.g_widths()
        zin = cfg.nz + cfg.n_classes
        blocks: list[nn.Module] = []
        if cfg.fc_hidden:
            # Ablation: z -> FC hidden -> FC to the 4x4 map (violates guideline 2).
            first = nn.Sequential(
                nn.Flatten(),
                nn.Linear(zin, cfg.fc_hidden),
                nn.ReLU(True),
                nn.Linear(cfg.fc_hidden, widths[0] * 16),
                nn.Unflatten(1, (widths[0], 4, 4)),
                _norm(cfg, widths[0]),
                nn.ReLU(True),
            )
        elif cfg.g_unit_bn and cfg.batchnorm:
            # The authors' G: BN of the dense layer's 4096 outputs, one mean/variance per unit (not per channel).
            first = nn.Sequential(
                nn.ConvTranspose2d(zin, widths[0], 4, 1, 0, bias=False),
                nn.Flatten(),
                nn.BatchNorm1d(widths[0] * 16, eps=cfg.bn_eps, affine=cfg.bn_affine),
                nn.Unflatten(1, (widths[0], 4, 4)),
                nn.ReLU(True),
            )
        else:
            first = nn.Sequential(
                nn.ConvTranspose2d(zin, widths[0], 4, 1, 0, bias=False),
                _norm(cfg, widths[0]),
                nn.ReLU(True),
            )
        blocks.append(first)
        for cin, cout in zip(widths[:-1], widths[1:]):
            blocks.append(nn.Sequential(self._up(cfg, cin, cout), _norm(cfg, cout), nn.ReLU(True)))
        self.blocks = nn.ModuleList(blocks)
        out: list[nn.Module] = [self._up(cfg, widths[-1], cfg.channels)]
        if cfg.bn_everywhere and cfg.batchnorm:
            out.append(nn.BatchNorm2d(cfg.channels, eps=cfg.bn_eps, affine=cfg.bn_affine))
        out.append(nn.Tanh())
        self.out = nn.Sequential(*out)
        self.apply(weights_init)

    @staticmethod
    def _up(cfg: ModelConfig, cin: int, cout: int) -> nn.Module:
        if cfg.pooling:  # fixed upsampling instead of a learned one (ablates guideline 1)
            return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=False))
        g = _conv_geometry(cfg)
        return nn.ConvTranspose2d(cin, cout, stride=2, output_padding=g["kernel_size"] - 4, bias=False, **g)

    def _input(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if z.dim() == 2:
            z = z[:, :, None, None]
        if self.cfg.n_classes:
            if y is None:
                raise ValueError("this generator is label-conditional: pass y (class indices)")
            onehot = nn.functional.one_hot(y.long(), self.cfg.n_classes).to(z.dtype)
            z = torch.cat([z, onehot[:, :, None, None]], 1)
        elif y is not None:
            raise ValueError("y was given to an unconditional generator")
        return z

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self._input(z, y)
        for block in self.blocks:
            h = block(h)
        return self.out(h)

    def activations(self, z: torch.Tensor, y: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every hidden block's output (4x4 first), then the image."""
        h = self._input(z, y)
        acts = []
        for block in self.blocks:
            h = block(h)
            acts.append(h)
        acts.append(self.out(h))
        return acts


class Discriminator(nn.Module):
    """image (N, C, S, S) -> logit (N,).

    ``blocks[i]`` outputs the i-th conv map (S/2 first, 4x4 last); ``head``
    maps the 4x4 map to one logit.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        widths = cfg.d_widths()
        cin = cfg.channels + cfg.n_classes
        blocks: list[nn.Module] = []
        for i, cout in enumerate(widths):
            layers: list[nn.Module] = [self._down(cfg, cin, cout)]
            if i > 0 or cfg.bn_everywhere:  # guideline 3: no BN on D's input layer
                layers.append(_norm(cfg, cout))
            layers.append(nn.LeakyReLU(cfg.leaky_slope, True) if cfg.d_activation == "leaky" else nn.ReLU(True))
            blocks.append(nn.Sequential(*layers))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        if cfg.fc_hidden:
            act = nn.LeakyReLU(cfg.leaky_slope, True) if cfg.d_activation == "leaky" else nn.ReLU(True)
            self.head = nn.Sequential(
                nn.Flatten(), nn.Linear(widths[-1] * 16, cfg.fc_hidden), act, nn.Linear(cfg.fc_hidden, 1)
            )
        else:
            self.head = nn.Sequential(nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False), nn.Flatten())
        self.apply(weights_init)

    @staticmethod
    def _down(cfg: ModelConfig, cin: int, cout: int) -> nn.Module:
        if cfg.pooling:  # deterministic pooling instead of strided conv (ablates guideline 1)
            return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.MaxPool2d(2))
        return nn.Conv2d(cin, cout, stride=2, bias=False, **_conv_geometry(cfg))

    def _input(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        c, s = self.cfg.channels, self.cfg.image_size
        if x.dim() != 4 or x.shape[1] != c or x.shape[2] != s or x.shape[3] != s:
            raise ValueError(f"discriminator expects images of shape (N, {c}, {s}, {s}), got {tuple(x.shape)}")
        if self.cfg.n_classes:
            if y is None:
                raise ValueError("this discriminator is label-conditional: pass y (class indices)")
            onehot = nn.functional.one_hot(y.long(), self.cfg.n_classes).to(x.dtype)
            x = torch.cat([x, onehot[:, :, None, None].expand(-1, -1, s, s)], 1)
        elif y is not None:
            raise ValueError("y was given to an unconditional discriminator")
        return x

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self._input(x, y)
        for block in self.blocks:
            h = block(h)
        return self.head(h).view(-1)

    def activations(self, x: torch.Tensor, y: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every conv block's output (after its activation), input side first."""
        h = self._input(x, y)
        acts = []
        for block in self.blocks:
            h = block(h)
            acts.append(h)
        return acts


def weights_init(m: nn.Module) -> None:
    """§4: all weights from N(0, 0.02); BatchNorm scale N(1, 0.02), shift 0."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def sample_noise(
    cfg: ModelConfig,
    n: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """n latent vectors (n, nz) from the config's prior (uniform [-1, 1] as in the paper, or N(0, 1))."""
    if cfg.z_dist == "uniform":
        z = torch.rand(n, cfg.nz, generator=generator) * 2 - 1
    else:
        z = torch.randn(n, cfg.nz, generator=generator)
    return z.to(device)


def build_models(cfg: ModelConfig) -> tuple[Generator, Discriminator]:
    return Generator(cfg), Discriminator(cfg)


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def layer_table(net: nn.Module, *inputs: torch.Tensor) -> list[dict]:
    """One row per leaf layer run by ``net(*inputs)``: name, layer, output shape (without N), parameters.

    The rows follow execution order (what the data goes through), which is
    how the paper's Figure 1 draws G.
    """
    rows: list[dict] = []
    hooks = []
    for name, m in net.named_modules():
        if len(list(m.children())) == 0 and not isinstance(m, (nn.Flatten, nn.Unflatten, nn.Identity)):
            def hook(mod, inp, out, name=name):
                rows.append({
                    "name": name,
                    "layer": _describe(mod),
                    "output": tuple(out.shape[1:]),
                    "params": sum(p.numel() for p in mod.parameters(recurse=False)),
                })
            hooks.append(m.register_forward_hook(hook))
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(*inputs)
    finally:
        net.train(was)
        for h in hooks:
            h.remove()
    return rows


def _describe(m: nn.Module) -> str:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        kind = "ConvTranspose2d" if isinstance(m, nn.ConvTranspose2d) else "Conv2d"
        return f"{kind}({m.in_channels}->{m.out_channels}, k{m.kernel_size[0]}, s{m.stride[0]}, p{m.padding[0]})"
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return f"{type(m).__name__}({m.num_features}{'' if m.affine else ', no scale/bias'})"
    if isinstance(m, nn.LeakyReLU):
        return f"LeakyReLU({m.negative_slope})"
    if isinstance(m, nn.Linear):
        return f"Linear({m.in_features}->{m.out_features})"
    return type(m).__name__


def _leaves(m: nn.Module) -> list[nn.Module]:
    return [x for x in m.modules() if len(list(x.children())) == 0]


def check_guidelines(g: Generator, d: Discriminator) -> dict[str, tuple[bool, str]]:
    """Check the four architecture guidelines of §3 on built nets (not on the config).

    Returns ``{guideline: (holds, what was found)}``; the chapter-08 ablations
    switch individual guidelines off and this reports exactly those.
    """
    pools = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Upsample)
    g_leaves, d_leaves = _leaves(g), _leaves(d)
    n_pool = sum(isinstance(x, pools) for x in g_leaves + d_leaves)
    d_strided = all(
        isinstance(b[0], nn.Conv2d) and b[0].stride == (2, 2) for b in d.blocks
    )
    g_up = [b[0] for b in list(g.blocks)[1:]] + [g.out[0]]  # every doubling of resolution
    g_strided = all(isinstance(m, nn.ConvTranspose2d) and m.stride == (2, 2) for m in g_up)
    r: dict[str, tuple[bool, str]] = {}
    r["1 no pooling: strided conv in D, transposed conv in G"] = (
        n_pool == 0 and d_strided and g_strided,
        f"{n_pool} pooling/upsampling layers; D downsamples by stride-2 conv: {d_strided}; "
        f"G upsamples by stride-2 transposed conv: {g_strided}",
    )
    n_fc = sum(isinstance(x, nn.Linear) for x in g_leaves + d_leaves)
    r["2 no fully connected hidden layers"] = (
        n_fc == 0,
        f"{n_fc} Linear layers; G's first layer: {_describe(_leaves(g.blocks[0])[0])}; "
        f"D's last layer: {_describe(_leaves(d.head)[0])}",
    )

    def has_bn(m: nn.Module) -> bool:
        return any(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in m.modules())

    g_hidden_bn = [has_bn(b) for b in g.blocks]
    d_bn = [has_bn(b) for b in d.blocks]
    ok3 = all(g_hidden_bn) and not has_bn(g.out) and not d_bn[0] and all(d_bn[1:])
    r["3 BatchNorm except G's output and D's input"] = (
        ok3,
        f"G hidden blocks with BN: {sum(g_hidden_bn)}/{len(g_hidden_bn)}, G output BN: {has_bn(g.out)}; "
        f"D input block BN: {d_bn[0]}, other D blocks with BN: {sum(d_bn[1:])}/{len(d_bn) - 1}",
    )
    g_acts = [type(x).__name__ for x in g_leaves if isinstance(x, (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid))]
    d_acts = [type(x).__name__ for x in d_leaves if isinstance(x, (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid))]
    ok4 = g_acts[-1] == "Tanh" and all(a == "ReLU" for a in g_acts[:-1]) and all(a == "LeakyReLU" for a in d_acts)
    r["4 ReLU in G (Tanh output), LeakyReLU in D"] = (
        ok4,
        f"G: {', '.join(g_acts)}; D: {', '.join(d_acts)} (the sigmoid is in the loss)",
    )
    return r
