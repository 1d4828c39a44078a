"""Augmentations beyond crop and flip, on uint8 NHWC batches, drawn from the epoch's generator.

- ``random_erase``: a random rectangle of each chosen image replaced by noise (Zhong et al.,
  2017); a strong regulariser for Fashion-MNIST-sized nets.
- ``rescale``: zoom in or out about the centre; the preprocessing policy sizes a photo's object
  to the frame, but its trim is never exact.
- ``photo_degrade``: what the photo policy leaves behind in a photographed garment: a background
  that is not quite black and not flat (lamp gradient), lower contrast, blur, sensor noise, JPEG.

Each draws every random number from ``gen`` in a fixed order, so a resumed run repeats itself.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F

# Random erasing's published defaults: 2-40 % of the area, aspect ratio 0.3-3.3.
ERASE_AREA = (0.02, 0.4)
ERASE_LOG_RATIO = (math.log(0.3), math.log(1 / 0.3))


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def random_erase(batch: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """With probability ``p`` per image, fill one random rectangle with uniform noise."""
    if p <= 0:
        return batch
    n, h, w, _ = batch.shape
    chosen = torch.rand(n, generator=gen) < p
    area = _uniform(n, *ERASE_AREA, gen) * h * w
    ratio = torch.exp(_uniform(n, *ERASE_LOG_RATIO, gen))
    eh = torch.sqrt(area * ratio).round().clamp(1, h)
    ew = torch.sqrt(area / ratio).round().clamp(1, w)
    y0 = (torch.rand(n, generator=gen) * (h - eh + 1)).floor()
    x0 = (torch.rand(n, generator=gen) * (w - ew + 1)).floor()
    rows = torch.arange(h)[None, :]
    cols = torch.arange(w)[None, :]
    in_rows = (rows >= y0[:, None]) & (rows < (y0 + eh)[:, None])
    in_cols = (cols >= x0[:, None]) & (cols < (x0 + ew)[:, None])
    mask = in_rows[:, :, None] & in_cols[:, None, :] & chosen[:, None, None]
    noise = torch.randint(0, 256, batch.shape, generator=gen, dtype=torch.uint8)
    return torch.where(mask[..., None], noise, batch)


def rescale(batch: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    """Zoom each image by a factor in [1 - amount, 1 + amount] about its centre (zeros outside)."""
    if amount <= 0:
        return batch
    n = batch.shape[0]
    zoom = _uniform(n, 1 - amount, 1 + amount, gen)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / zoom
    x = batch.permute(0, 3, 1, 2).float()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _blur(x: torch.Tensor, sigma: float = 0.8) -> torch.Tensor:
    """Separable Gaussian blur of a float NCHW tensor (3-tap kernel, replicate borders)."""
    taps = torch.exp(-torch.tensor([1.0, 0.0, 1.0]) / (2 * sigma**2))
    taps = taps / taps.sum()
    c = x.shape[1]
    x = F.pad(x, (1, 1, 1, 1), mode="replicate")
    x = F.conv2d(x, taps.view(1, 1, 1, 3).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, taps.view(1, 1, 3, 1).repeat(c, 1, 1, 1), groups=c)


def _jpeg(images: np.ndarray, qualities: list[int]) -> np.ndarray:
    from PIL import Image

    out = images.copy()
    for i, q in enumerate(qualities):
        im = Image.fromarray(images[i].squeeze(-1) if images.shape[-1] == 1 else images[i])
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=q)
        buf.seek(0)
        decoded = np.asarray(Image.open(buf).convert(im.mode))
        out[i] = decoded.reshape(out[i].shape)
    return out


def photo_degrade(batch: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """With probability ``p`` per image, the traces of a photograph, each mild and each optional.

    Background lifted by up to 24 levels and contrast down to 80 %; a linear light gradient of up
    to +-16 levels; a Gaussian blur blended in by up to 100 %; noise of sigma up to 6; JPEG at
    quality 60-95 for half of the chosen images.
    """
    if p <= 0:
        return batch
    n, h, w, _ = batch.shape
    chosen = torch.rand(n, generator=gen) < p
    floor = _uniform(n, 0, 24, gen)
    contrast = _uniform(n, 0.8, 1.0, gen)
    angle = _uniform(n, 0, 2 * math.pi, gen)
    slope = _uniform(n, 0, 16, gen)
    blur_mix = torch.rand(n, generator=gen)
    sigma = _uniform(n, 0, 6, gen)
    noise = torch.randn(batch.shape, generator=gen)
    use_jpeg = torch.rand(n, generator=gen) < 0.5
    quality = torch.randint(60, 96, (n,), generator=gen)
    if not bool(chosen.any()):
        return batch

    x = batch.permute(0, 3, 1, 2).float()
    x = x + blur_mix.view(n, 1, 1, 1) * (_blur(x) - x)
    lift = floor.view(n, 1, 1, 1)
    x = lift + contrast.view(n, 1, 1, 1) * x * (255 - lift) / 255
    yy = torch.linspace(-1, 1, h).view(1, 1, h, 1)
    xx = torch.linspace(-1, 1, w).view(1, 1, 1, w)
    ramp = torch.cos(angle).view(n, 1, 1, 1) * xx + torch.sin(angle).view(n, 1, 1, 1) * yy
    x = x + slope.view(n, 1, 1, 1) * ramp
    x = x + sigma.view(n, 1, 1, 1) * noise.permute(0, 3, 1, 2)
    out = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    jpeg = (chosen & use_jpeg).nonzero().flatten().tolist()
    if jpeg:
        arr = out.numpy()
        arr[jpeg] = _jpeg(arr[jpeg], [int(quality[i]) for i in jpeg])
        out = torch.from_numpy(arr)
    return torch.where(chosen.view(n, 1, 1, 1), out, batch)
