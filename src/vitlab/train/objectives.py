"""Training objectives: classification (the default) and the ViT paper's masked patch prediction.

Masked patch prediction (Dosovitskiy et al., ICLR 2021, section 4.6 and appendix B.1.2, after
BERT's masked language modelling): of each image's patch embeddings, half are corrupted (exactly
N // 2 of the N patches, chosen at random); of those, 80% are replaced by a learnable mask token,
10% by the patch embedding of a random patch of the batch, and 10% are kept as they are. From each
corrupted patch's output token a linear head predicts the patch's 3-bit mean colour: the mean of
each channel of the image (before normalisation, in [0, 1]) over the patch, cut into 8 levels, so
512 classes for RGB; for one-channel data the mean intensity in 8 levels (8 classes). The loss is
the cross-entropy over the corrupted positions only, as in the paper; accuracy is counted there.

The corruption replaces patch embeddings before the class token and the position embeddings are
added (``VisionTransformer.embed(x, corrupt)``), as BERT replaces tokens before adding positions.
Training draws from the global RNG (seeded by the trainer per epoch and rank, like dropout);
evaluation draws from a generator seeded anew for every pass, so every epoch is validated on the
same corruption. The mask token and the prediction head are this module's own parameters: a
checkpoint keeps them under ``objective``, apart from the model's weights, so fine-tuning takes
the model alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import check_mpp_model
from ..errors import UserError

LEVELS = 8  # 3 bits per channel
MASK, RANDOM = 0.8, 0.1  # of the corrupted positions: mask token, random patch; the rest are kept


class MaskedPatchPrediction(nn.Module):
    """A ViT with the masked-patch-prediction head. ``forward(images)`` -> (summed loss over the
    corrupted positions, correct predictions there), tensors on the device; their number is
    ``count(batch)``, known on the host."""

    def __init__(self, model: nn.Module, mean, std, seed: int = 0):
        super().__init__()
        check_mpp_model(model, getattr(model, "model_name", type(model).__name__))
        self.model = model
        dim, chans = model.num_features, len(mean)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.classes = LEVELS if chans == 1 else LEVELS ** 3
        self.head = nn.Linear(dim, self.classes)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        gh, gw = model.grid_size()
        self.num_patches = gh * gw
        self.corrupted_per_image = self.num_patches // 2
        self.seed = seed
        self.generator = None  # set for an evaluation pass (a fixed corruption)

    # -- the parts ---------------------------------------------------------------------------------
    def targets(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N) int64: each patch's 3-bit mean colour (channel levels r, g, b -> 64 r + 8 g + b) or,
        for one channel, its mean intensity level."""
        pixels = (images.float() * self.std + self.mean).clamp(0, 1)  # the image before normalisation
        gh, gw = self.model.patch_embed.grid_for(*images.shape[-2:])
        ph, pw = images.shape[-2] // gh, images.shape[-1] // gw
        means = F.avg_pool2d(pixels[..., :gh * ph, :gw * pw], (ph, pw))  # (B, C, gh, gw)
        levels = (means * LEVELS).floor().clamp(0, LEVELS - 1).long().flatten(2)  # (B, C, N)
        weights = LEVELS ** torch.arange(levels.shape[1] - 1, -1, -1, device=levels.device)  # (C,): 64, 8, 1
        return (levels * weights[None, :, None]).sum(1)

    def _rand(self, *shape, device) -> torch.Tensor:
        return torch.rand(*shape, device=device, generator=self.generator)

    def corruption(self, b: int, n: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(corrupted (B, N) bool, replaced by the mask token (B, N) bool, by a random patch (B, N) bool)."""
        order = self._rand(b, n, device=device).argsort(1)
        corrupted = torch.zeros(b, n, dtype=torch.bool, device=device)
        corrupted.scatter_(1, order[:, :self.corrupted_per_image], True)
        u = self._rand(b, n, device=device)
        masked = corrupted & (u < MASK)
        randomised = corrupted & (u >= MASK) & (u < MASK + RANDOM)
        return corrupted, masked, randomised

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, dev = images.shape[0], images.device
        targets = self.targets(images)
        n = targets.shape[1]
        corrupted, masked, randomised = self.corruption(b, n, dev)
        pick = (self._rand(b, n, device=dev) * (b * n)).long().clamp_(max=b * n - 1)  # a random patch of the batch

        def corrupt(tokens: torch.Tensor) -> torch.Tensor:  # (B, N, D) patch embeddings
            others = tokens.reshape(b * n, -1)[pick]
            tokens = torch.where(randomised[..., None], others, tokens)
            return torch.where(masked[..., None], self.mask_token.to(tokens.dtype), tokens)

        out = self.model.forward_features(images, corrupt=corrupt)[:, self.model.num_prefix_tokens:]
        logits = self.head(out[corrupted]).float()  # (K, classes), K = B x N // 2
        wanted = targets[corrupted]
        loss = F.cross_entropy(logits, wanted, reduction="sum")
        correct = (logits.argmax(-1) == wanted).sum()
        return loss, correct

    def no_weight_decay(self) -> set[str]:
        return {f"model.{n}" for n in self.model.no_weight_decay()} | {"mask_token"}

    def count(self, batch: int) -> int:
        """Corrupted positions of a batch of ``batch`` images (known on the host)."""
        return batch * self.corrupted_per_image

    def eval_generator(self, device) -> torch.Generator:
        """A generator for one evaluation pass: the same corruption at every epoch."""
        return torch.Generator(device=device).manual_seed(self.seed + 7919)

    def extra_state(self) -> dict:
        """What a checkpoint keeps of the objective (apart from the model)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("model.")}

    def load_extra_state(self, state: dict) -> None:
        missing = self.load_state_dict(state, strict=False)
        bad = [k for k in missing.missing_keys if not k.startswith("model.")] + list(missing.unexpected_keys)
        if bad:
            raise UserError(f"the checkpoint's masked-patch-prediction state does not fit: {', '.join(bad)}")
