"""Random augmentations of image batches, as tensor operations on their device.

Every image of a batch gets its own random crop, flip, rotation and intensity
jitter. All random numbers come from one :class:`torch.Generator` living on
the images' device, so a seeded fit draws the same views on every run.
"""

import math
from dataclasses import dataclass
from numbers import Real

import torch
import torch.nn.functional as F

# Aspect ratios of the random crops, as in the usual random-resized-crop.
_CROP_RATIOS = (3 / 4, 4 / 3)
# ITU-R 601 luma weights, to desaturate RGB images.
_LUMA = (0.299, 0.587, 0.114)


def device_generator(generator, device):
    """A generator on ``device`` seeded from the CPU ``generator``."""
    seed = int(torch.randint(2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def check_crop_scale(value, name):
    """``value`` as a ``(low, high)`` pair of floats with ``0 < low <= high <= 1``.

    Raises a ValueError naming the parameter ``name`` otherwise.
    """
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, Real) for v in value) or not 0 < value[0] <= value[1] <= 1):
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high <= 1, got {value!r}.")
    return float(value[0]), float(value[1])


@dataclass(frozen=True)
class Augmentation:
    """Settings of :meth:`__call__`, which draws one random view per image.

    Parameters
    ----------
    crop_scale : tuple of float
        Range of the fraction of the image area a random crop covers; the crop
        is resized back to the full image.
    rotation : float
        Largest rotation, in degrees, either way.
    flip : bool
        Mirror half of the images left to right.
    jitter : float
        Strength of the intensity jitter: brightness and contrast are scaled by
        factors drawn from ``[1 - jitter, 1 + jitter]``, and, for images with
        three channels, saturation too. ``0`` turns it off.
    """

    crop_scale: tuple = (0.5, 1.0)
    rotation: float = 15.0
    flip: bool = True
    jitter: float = 0.4

    def __call__(self, images, generator):
        """One random view of every image.

        Parameters
        ----------
        images : torch.Tensor of shape (batch, channels, height, width)
        generator : torch.Generator
            Generator on the images' device.

        Returns
        -------
        views : torch.Tensor of the same shape as ``images``
        """
        views = self._geometric(images, generator)
        if self.jitter > 0:
            views = self._intensity(views, generator)
        return views

    def _uniform(self, low, high, n, generator, device):
        return low + (high - low) * torch.rand(n, generator=generator, device=device)

    def _geometric(self, images, generator):
        """Crop, flip and rotate through one affine resampling per image."""
        n, device = len(images), images.device
        area = self._uniform(*self.crop_scale, n, generator, device)
        log_ratio = self._uniform(*map(math.log, _CROP_RATIOS), n, generator, device)
        # Side lengths of the crop as fractions of the image's width and height;
        # a side that would not fit is cut to the image and the other one
        # grows to keep the area, so crop_scale=(1, 1) is the whole image.
        width = (area * log_ratio.exp()).sqrt().clamp(max=1.0)
        height = (area / width).clamp(max=1.0)
        width = (area / height).clamp(max=1.0)
        shift_x = (1 - width) * self._uniform(-1.0, 1.0, n, generator, device)
        shift_y = (1 - height) * self._uniform(-1.0, 1.0, n, generator, device)
        angle = math.radians(self.rotation) * self._uniform(-1.0, 1.0, n, generator, device)
        mirror = torch.ones(n, device=device)
        if self.flip:
            mirror = torch.where(torch.rand(n, generator=generator, device=device) < 0.5,
                                 -mirror, mirror)
        cos, sin = angle.cos(), angle.sin()
        # Output pixel (u, v) samples the input at R(angle) @ diag(mirror * width, height)
        # @ (u, v) + shift, in the [-1, 1] coordinates of affine_grid.
        theta = torch.stack([
            torch.stack([cos * width * mirror, -sin * height, shift_x], dim=1),
            torch.stack([sin * width * mirror, cos * height, shift_y], dim=1),
        ], dim=1)
        grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                             align_corners=False)

    def _intensity(self, images, generator):
        """Brightness, contrast and (three channels) saturation jitter."""
        n, device = len(images), images.device
        low, high = max(0.0, 1 - self.jitter), 1 + self.jitter

        def factor():
            return self._uniform(low, high, n, generator, device).to(images.dtype)[:, None, None, None]

        images = images * factor()
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = (images - mean) * factor() + mean
        if images.shape[1] == 3:
            luma = torch.tensor(_LUMA, dtype=images.dtype, device=device)[None, :, None, None]
            gray = (images * luma).sum(dim=1, keepdim=True)
            images = (images - gray) * factor() + gray
        return images
