"""Normalisation constants and batch-level augmentation for images held as uint8 tensors.

Every function works on a whole batch ``(N, C, H, W)`` at once with tensor operations, so a CPU
epoch of 10,000 CIFAR-10 images costs a fraction of a second. Random numbers come from an
explicit ``torch.Generator`` so that a seed fixes every crop and flip.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RandomCropFlip",
    "default_padding",
    "normalize",
    "random_crop_flip",
]

# Per-channel (R, G, B) mean and standard deviation of the 50,000 CIFAR-10 training images, on
# pixel values scaled to [0, 1], as commonly published. On the 10,000-image JPEG subset they give
# normalised channel means within 0.01 of 0 and standard deviations within 0.01 of 1.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# The ImageNet constants used by torchvision's pretrained models, also on [0, 1] pixels.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_batch(images: object) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(
            f"images must be a batch of shape (N, C, H, W), got shape {tuple(images.shape)}; "
            f"add a batch dimension with images.unsqueeze(0)"
        )
    return images


def normalize(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Convert a batch to float32 and normalise each channel: ``(x / 255 - mean) / std``.

    Args:
        images: ``(N, C, H, W)`` batch, either uint8 pixels in [0, 255] or floating point values in
            [0, 1]. Any memory format and device.
        mean: ``C`` per-channel means of the [0, 1] pixels, e.g. :data:`CIFAR10_MEAN`.
        std: ``C`` per-channel standard deviations, e.g. :data:`CIFAR10_STD`.

    Returns:
        A new float32 tensor of the same shape and device. The input is not modified.

    Raises:
        ValueError: if the batch is not 4-D, ``mean``/``std`` do not have ``C`` entries, or a
            standard deviation is not positive.

    Example:
        >>> batch = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
        >>> normalize(batch, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)).unique()
        tensor([1.])
    """
    _check_batch(images)
    channels = images.shape[1]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"mean has {len(mean)} and std has {len(std)} entries, but the images have "
            f"{channels} channels; pass one value per channel"
        )
    if min(std) <= 0:
        raise ValueError(f"std={tuple(std)} must be positive in every channel")

    pixel_scale = 255.0 if images.dtype == torch.uint8 else 1.0
    mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)

    # One multiply and one subtract over the batch: x * (1 / (255 std)) - mean / std.
    scale = 1.0 / (pixel_scale * std_t)
    shift = mean_t / std_t
    output = images.to(torch.float32)
    output.mul_(scale).sub_(shift)
    return output


def random_crop_flip(
    images: torch.Tensor,
    *,
    padding: int,
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Randomly crop each image of a zero-padded batch and mirror about half of them.

    Each image is padded with ``padding`` zero pixels on every side, then an ``H x W`` window at a
    uniformly random offset in ``[0, 2 * padding]`` (independently in y and x) is kept. With
    ``flip=True`` each window is mirrored left to right with probability 0.5. This is the standard
    CIFAR augmentation (``padding=4`` for 32 px images), done for the whole batch with one
    ``gather``.

    Args:
        images: ``(N, C, H, W)`` batch of any dtype (uint8 pixels are the usual input) and device.
        padding: zero pixels added on each side, ``>= 0``. ``padding=0`` only flips.
        flip: mirror a random half of the images horizontally.
        generator: CPU ``torch.Generator`` that draws the offsets and flips; ``None`` uses the
            global generator.

    Returns:
        A new tensor of the same shape, dtype and device as ``images``.

    Raises:
        ValueError: if ``padding`` is negative or the batch is not 4-D.

    Example:
        >>> batch = torch.arange(8, dtype=torch.uint8).view(2, 1, 2, 2)
        >>> out = random_crop_flip(batch, padding=1, generator=torch.Generator().manual_seed(0))
        >>> out.shape, out.dtype
        (torch.Size([2, 1, 2, 2]), torch.uint8)
    """
    _check_batch(images)
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding={padding!r} must be an int >= 0 (pixels added on each side)")

    count, channels, height, width = images.shape
    padded_width = width + 2 * padding
    padded = images.new_zeros((count, channels, height + 2 * padding, padded_width))
    padded[:, :, padding : padding + height, padding : padding + width] = images

    # Offsets and flips are drawn on the CPU so that one seed gives the same batch on any device.
    offset_y = torch.randint(0, 2 * padding + 1, (count, 1), generator=generator)
    offset_x = torch.randint(0, 2 * padding + 1, (count, 1), generator=generator)
    rows = offset_y + torch.arange(height)
    columns = offset_x + torch.arange(width)
    if flip:
        mirrored = torch.rand(count, 1, generator=generator) < 0.5
        columns = torch.where(mirrored, columns.flip(1), columns)

    # Flat index of every output pixel inside its padded image, shared by all channels.
    index = rows[:, :, None] * padded_width + columns[:, None, :]
    index = index.view(count, 1, height * width).expand(count, channels, height * width)
    flat = padded.view(count, channels, -1)
    cropped = torch.gather(flat, 2, index.to(images.device))
    return cropped.view(count, channels, height, width)


def default_padding(image_size: int) -> int:
    """Return the crop padding for square images of ``image_size`` pixels: one eighth, at least 1.

    This gives the usual 4 px for 32 px CIFAR images, 8 px for 64 px and 20 px for 160 px.
    """
    return max(1, round(image_size / 8))


class RandomCropFlip:
    """Callable form of :func:`random_crop_flip`, as used by :func:`flexhinm.data.make_loader`.

    Args:
        padding: zero pixels added on each side before the random crop.
        flip: mirror a random half of the images horizontally.

    Example:
        >>> augment = RandomCropFlip(padding=4)
        >>> batch = torch.zeros(8, 3, 32, 32, dtype=torch.uint8)
        >>> augment(batch, torch.Generator().manual_seed(0)).shape
        torch.Size([8, 3, 32, 32])
    """

    def __init__(self, padding: int, flip: bool = True) -> None:
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding={padding!r} must be an int >= 0 (pixels added on each side)")
        self.padding = padding
        self.flip = flip

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return random_crop_flip(images, padding=self.padding, flip=self.flip, generator=generator)

    def __repr__(self) -> str:
        return f"RandomCropFlip(padding={self.padding}, flip={self.flip})"
