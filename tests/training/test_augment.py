from __future__ import annotations

import numpy as np
import pytest
import torch

from training.augment import photo_degrade, random_erase, rescale


def _garments(n: int = 64) -> torch.Tensor:
    """Light blobs on black, like Fashion-MNIST: a filled rectangle of varying size per image."""
    x = torch.zeros(n, 28, 28, 1, dtype=torch.uint8)
    for i in range(n):
        m = 3 + i % 6
        x[i, m : 28 - m, m + 2 : 26 - m] = 200
    return x


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("fn", [random_erase, rescale, photo_degrade])
def test_off_means_untouched_and_no_random_numbers_drawn(fn) -> None:
    x = _garments()
    g = _gen()
    assert torch.equal(fn(x, 0.0, g), x)
    # the generator was not advanced: a run without the option repeats the old runs exactly
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=_gen()))


@pytest.mark.parametrize("fn,amount", [(random_erase, 0.5), (rescale, 0.15), (photo_degrade, 0.5)])
def test_deterministic_per_generator_and_keeps_dtype_and_shape(fn, amount: float) -> None:
    x = _garments()
    a, b = fn(x, amount, _gen(7)), fn(x, amount, _gen(7))
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, fn(x, amount, _gen(8)))


def test_random_erase_replaces_one_rectangle_in_about_p_of_the_images() -> None:
    x = _garments(2000)
    y = random_erase(x, 0.5, _gen(1))
    changed = (y != x).any(dim=(1, 2, 3))
    assert 0.44 < changed.float().mean() < 0.56
    for i in changed.nonzero().flatten()[:50].tolist():
        rows = (y[i] != x[i]).any(dim=(1, 2)).nonzero().flatten()
        cols = (y[i] != x[i]).any(dim=(0, 2)).nonzero().flatten()
        # the changed pixels lie in one box covering at most 40 % of the picture (and a bit of
        # rounding), and inside that box the pixels are noise, not the garment
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert box <= 0.45 * 28 * 28
        assert y[i].float().std() > 0


def test_rescale_zooms_about_the_centre() -> None:
    x = _garments(200)
    y = rescale(x, 0.2, _gen(2))
    ink_before = (x > 100).sum(dim=(1, 2, 3)).float()
    ratio = (y > 100).sum(dim=(1, 2, 3)).float() / ink_before
    # area scales with the square of the zoom: within (0.8^2, 1.2^2) with rounding slack
    assert ratio.min() > 0.55 and ratio.max() < 1.55
    assert (ratio < 0.95).any() and (ratio > 1.05).any()
    # the centre stays where it was: the mean ink position moves by under a pixel
    rows = torch.arange(28.0).view(1, 28, 1, 1)
    centre = lambda t: ((t > 100) * rows).sum(dim=(1, 2, 3)) / (t > 100).sum(dim=(1, 2, 3))  # noqa: E731
    assert (centre(y) - centre(x)).abs().max() < 1.0


def test_photo_degrade_lifts_the_background_but_keeps_the_garment_readable() -> None:
    x = _garments(400)
    y = photo_degrade(x, 1.0, _gen(3))
    background = y[x == 0].float()
    garment = y[x == 200].float()
    assert background.mean() > 3  # no longer pure black ...
    assert background.max() <= 80  # ... but still dark
    assert garment.mean() > background.mean() + 120  # the object stands out
    diff = (y.float() - x.float()).abs().mean(dim=(1, 2, 3))
    assert np.percentile(diff.numpy(), 10) > 1  # every chosen image was degraded
