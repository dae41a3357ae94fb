"""Building blocks of ContrastiveDSC: augmentations, InfoNCE losses, ridge start of C."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from skdsc.nn import Augmentation
from skdsc.nn.encoders import channel_statistics
from skdsc.nn.losses import info_nce_loss, paired_info_nce_loss
from skdsc.nn.self_expression import ridge_coefficients


def images_of(n=6, channels=3, size=8, seed=0):
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


# -- Augmentation -------------------------------------------------------------

def test_augmentation_without_randomness_is_the_identity():
    images = images_of()
    still = Augmentation(crop_scale=(1.0, 1.0), rotation=0.0, flip=False, jitter=0.0)
    assert_close(still(images, generator()), images, atol=1e-5, rtol=0)


def test_flip_alone_mirrors_about_half_of_the_images():
    images = images_of(n=200, channels=1)
    flip = Augmentation(crop_scale=(1.0, 1.0), rotation=0.0, flip=True, jitter=0.0)
    views = flip(images, generator())
    mirrored = torch.tensor([torch.allclose(v, x.flip(-1), atol=1e-5) for v, x in zip(views, images)])
    same = torch.tensor([torch.allclose(v, x, atol=1e-5) for v, x in zip(views, images)])
    assert torch.all(mirrored ^ same)
    assert 70 <= int(mirrored.sum()) <= 130


def test_views_are_seeded_and_differ_per_image():
    images = images_of()[:1].expand(4, -1, -1, -1).clone()
    augment = Augmentation()
    first = augment(images, generator(1))
    assert_close(augment(images, generator(1)), first)
    assert not torch.allclose(augment(images, generator(2)), first)
    # The same image gets a different random transform in each row.
    assert not torch.allclose(first[0], first[1])


def test_crop_zooms_in():
    """A crop of a quarter of the area shows a smaller part of the image, enlarged."""
    image = torch.zeros(1, 1, 32, 32)
    image[..., 12:20, 12:20] = 1.0  # a centred square of 8x8 pixels
    crop = Augmentation(crop_scale=(0.25, 0.25), rotation=0.0, flip=False, jitter=0.0)
    views = crop(image.expand(50, -1, -1, -1).clone(), generator())
    # Where the square is in view it appears larger than 64 pixels.
    assert views.sum(dim=(1, 2, 3)).max() > 64 * 1.5


def test_rotation_keeps_the_centre():
    image = torch.zeros(1, 1, 33, 33)
    image[..., 16, 16] = 1.0
    rotate = Augmentation(crop_scale=(1.0, 1.0), rotation=30.0, flip=False, jitter=0.0)
    views = rotate(image.expand(10, -1, -1, -1).clone(), generator())
    assert torch.all(views[:, 0, 16, 16] > 0.5)


@pytest.mark.parametrize("channels", [1, 3])
def test_jitter_changes_intensity_not_geometry(channels):
    images = images_of(channels=channels)
    jitter = Augmentation(crop_scale=(1.0, 1.0), rotation=0.0, flip=False, jitter=0.4)
    views = jitter(images, generator())
    assert views.shape == images.shape
    assert not torch.allclose(views, images)
    # Brightness and contrast are affine per image: correlation with the input stays.
    for view, image in zip(views, images):
        if channels == 1:
            corr = torch.corrcoef(torch.stack([view.flatten(), image.flatten()]))[0, 1]
            assert corr > 0.999


def test_saturation_jitter_only_for_colour():
    """Gray RGB images stay gray: saturation moves colours away from their luma only."""
    gray = images_of(channels=1).expand(-1, 3, -1, -1).clone()
    views = Augmentation(crop_scale=(1.0, 1.0), rotation=0.0, flip=False, jitter=0.4)(
        gray, generator())
    assert_close(views[:, 0], views[:, 1], atol=1e-5, rtol=0)


# -- losses -------------------------------------------------------------------

def test_info_nce_matches_its_definition():
    g = generator()
    anchors, positives, negatives = (torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g),
                                     torch.randn(7, 5, generator=g))
    exclude = torch.zeros(4, 7, dtype=torch.bool)
    exclude[0, 3] = True
    loss = info_nce_loss(anchors, positives, negatives, 0.3, exclude=exclude)
    a, p, n = (F.normalize(t, dim=1) for t in (anchors, positives, negatives))
    expected = 0.0
    for i in range(4):
        logits = [a[i] @ p[i]] + [a[i] @ n[j] for j in range(7) if not exclude[i, j]]
        logits = torch.stack(logits) / 0.3
        expected += -(logits[0] - torch.logsumexp(logits, 0))
    assert_close(loss, expected / 4)


def test_info_nce_prefers_the_true_positive():
    codes = torch.eye(4)
    own = torch.eye(4, dtype=torch.bool)  # each anchor's own slot in the bank
    assert info_nce_loss(codes, codes, codes, 0.1, exclude=own) < 0.01
    # A wrong positive, and the anchor's own code among the negatives.
    assert info_nce_loss(codes, codes[[1, 2, 3, 0]], codes, 0.1, exclude=own[[1, 2, 3, 0]]) > 5


def test_paired_info_nce_matches_its_definition():
    g = generator()
    first, second = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    loss = paired_info_nce_loss(first, second, 0.5)
    codes = F.normalize(torch.cat([first, second]), dim=1)
    expected = 0.0
    for i in range(6):
        partner = (i + 3) % 6
        logits = torch.stack([codes[i] @ codes[j] for j in range(6) if j != i]) / 0.5
        others = [j for j in range(6) if j != i]
        expected += -(logits[others.index(partner)] - torch.logsumexp(logits, 0))
    assert_close(loss, expected / 6)


def test_paired_info_nce_is_low_for_matching_views():
    views = torch.eye(5)
    assert paired_info_nce_loss(views, views, 0.05) < 1e-3
    assert paired_info_nce_loss(views, views[[1, 2, 3, 4, 0]], 0.05) > 5


# -- ridge start of the coefficients ------------------------------------------

@pytest.mark.parametrize("penalty", [0.0, 0.1, 10.0])
@pytest.mark.parametrize("shape", [(12, 4), (6, 20)], ids=["n>d", "n<d"])
def test_ridge_coefficients_solve_each_row(penalty, shape):
    """Both forms (the d x d system for n > d, the n x n one for n < d) solve every row."""
    n = shape[0]
    codes = torch.randn(*shape, generator=generator(), dtype=torch.float64)
    coefficients = ridge_coefficients(codes, penalty)
    assert torch.all(coefficients.diagonal() == 0)
    floor = 1e-8 * float(codes.pow(2).sum(1).mean()) + 1e-12
    for i in range(n):
        others = [j for j in range(n) if j != i]
        basis = codes[others]
        gram = basis @ basis.T + max(penalty, floor) * torch.eye(n - 1, dtype=codes.dtype)
        expected = torch.linalg.solve(gram, basis @ codes[i])
        assert_close(coefficients[i, others], expected, rtol=1e-6, atol=1e-8)


def test_ridge_coefficients_follow_the_subspaces():
    """On two orthogonal planes, each code is rebuilt from its own plane only."""
    g = generator()
    planes = [torch.randn(2, 6, generator=g) for _ in range(2)]
    codes = torch.cat([torch.randn(10, 2, generator=g) @ p for p in planes])
    coefficients = ridge_coefficients(codes, 1e-3).abs()
    within = coefficients[:10, :10].sum() + coefficients[10:, 10:].sum()
    assert within / coefficients.sum() > 0.99
    assert coefficients.dtype == codes.dtype


# -- normalisation ------------------------------------------------------------

def test_channel_statistics():
    config = {"mean": (0.4, 0.5, 0.6), "std": (0.1, 0.2, 0.3)}
    assert channel_statistics(config, 3) == ((0.4, 0.5, 0.6), (0.1, 0.2, 0.3))
    mean, std = channel_statistics(config, 1)
    assert mean == pytest.approx((0.5,)) and std == pytest.approx((0.2,))
    mean, std = channel_statistics(config, 2)
    assert mean == pytest.approx((0.5, 0.5)) and len(std) == 2
    assert math.isclose(sum(std), 0.4)
