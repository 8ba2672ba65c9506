"""The data path: PNG bytes become uint8 batches in DataLoader workers; float, stain jitter and normalisation run
on the model's device, once per batch."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

logger = logging.getLogger(__name__)

try:  # libspng decodes PNG about twice as fast as Pillow's libpng path
    import pyspng
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    pyspng = None

_PNG = b"\x89PNG"

HED_FROM_RGB = torch.linalg.inv(
    torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float32)
)
"""Ruifrok and Johnston's stain vectors (haematoxylin, eosin, DAB), inverted: optical density -> stain amounts."""


def decode_tile(data: bytes) -> np.ndarray:
    """Decode a tile's bytes to an (H, W, 3) uint8 array: PNG through libspng when installed, anything else
    (Kather's TIFF) through Pillow."""
    if pyspng is not None and data.startswith(_PNG):
        pixels = pyspng.load(data)
        if pixels.ndim == 3 and pixels.shape[2] == 3:
            return pixels
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def geometric_augment(pixels: np.ndarray) -> np.ndarray:
    """A random one of the eight flips and quarter turns: tissue has no up or left, and the scale is kept.

    Draws from torch's generator, which DataLoader seeds differently in every worker.
    """
    turns, flip = torch.randint(0, 4, ()).item(), torch.randint(0, 2, ()).item()
    pixels = np.rot90(pixels, k=turns)
    return pixels[:, ::-1] if flip else pixels


@dataclass
class TileCollator:
    """Turns examples with raw image bytes into `pixel_values` (uint8, B x 3 x H x W) and `labels`.

    The dataset's `image` column must be cast to `datasets.Image(decode=False)` so that the bytes reach the
    workers undecoded.
    """

    augment: bool = False
    image_column: str = "image"
    label_column: str = "label"

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        arrays = [self._pixels(example[self.image_column]) for example in examples]
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        labels = torch.tensor([example[self.label_column] for example in examples], dtype=torch.long)
        return {"pixel_values": batch, "labels": labels}

    def _pixels(self, image: dict | Image.Image) -> np.ndarray:
        if isinstance(image, Image.Image):
            pixels = np.asarray(image.convert("RGB"))
        else:
            pixels = decode_tile(image["bytes"])
        return geometric_augment(pixels) if self.augment else pixels


@dataclass
class PixelPreprocessor:
    """What a checkpoint's image processor does, for a whole uint8 batch on the device: resize if the model
    wants another size, scale to [0, 1], stain-jitter while training, normalise."""

    mean: Sequence[float]
    std: Sequence[float]
    size: int = 224
    stain_jitter: float = 0.0
    """Strength of the HED jitter (Tellez et al. 2019): stain amounts scaled by 1 +/- s and shifted by +/- s."""
    channels_last: bool = False

    def __call__(self, pixels: torch.Tensor, *, train: bool) -> torch.Tensor:
        values = pixels.float().mul_(1 / 255)
        if train and self.stain_jitter > 0:
            values = hed_jitter(values, self.stain_jitter)
        if values.shape[-1] != self.size or values.shape[-2] != self.size:
            values = F.interpolate(values, size=(self.size, self.size), mode="bilinear", antialias=True)
        mean = torch.tensor(self.mean, device=values.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=values.device).view(1, -1, 1, 1)
        values = values.sub_(mean).div_(std)
        return values.contiguous(memory_format=torch.channels_last) if self.channels_last else values


def hed_jitter(values: torch.Tensor, strength: float) -> torch.Tensor:
    """Perturb haematoxylin, eosin and DAB amounts of each image independently.

    Scaling and shifting stain amounts is linear in optical density, so each image's whole perturbation folds
    into one 3x3 matrix and one offset applied in a single batched multiply.

    Args:
        values: RGB batch in [0, 1], shape (B, 3, H, W).
        strength: Half-width of the uniform scale (around 1) and shift (around 0) of each stain.

    Returns:
        The jittered batch, clipped to [0, 1].
    """
    batch, channels, height, width = values.shape
    to_hed = HED_FROM_RGB.to(values.device)
    from_hed = torch.linalg.inv(to_hed)
    scale = 1 + (torch.rand(batch, 3, device=values.device) * 2 - 1) * strength
    shift = (torch.rand(batch, 1, 3, device=values.device) * 2 - 1) * strength
    # Row-vector density d becomes (d @ to_hed * scale + shift) @ from_hed = d @ mix + offset.
    mix = to_hed @ torch.diag_embed(scale) @ from_hed
    offset = (shift @ from_hed).transpose(1, 2)  # (B, 3, 1)
    density = values.clamp(min=1e-6).log_().neg_().reshape(batch, channels, height * width)
    density = torch.baddbmm(offset, mix.transpose(1, 2), density)
    return density.neg_().exp_().clamp_(0, 1).reshape(batch, channels, height, width)
