"""Convolutional and fully connected autoencoders with flat latent codes."""

import torch
from torch import nn


class ConvAutoencoder(nn.Module):
    """Stride-2 convolutional autoencoder (the DSC-Net architecture).

    Each encoder layer halves the height and width (rounding up; with an even
    kernel size, ``size // 2 + 1``) and is followed by a ReLU; the decoder
    mirrors it with transposed convolutions and returns images of exactly the
    input size. The last decoder layer is linear
    so that inputs of any sign can be rebuilt.

    Parameters
    ----------
    image_shape : tuple of int
        ``(channels, height, width)`` of the input images.
    hidden_channels : sequence of int
        Output channels of each encoder layer.
    kernel_sizes : sequence of int
        Kernel size of each encoder layer (same length as ``hidden_channels``).
    """

    def __init__(self, image_shape, hidden_channels, kernel_sizes):
        super().__init__()
        channels = [image_shape[0], *hidden_channels]
        self.image_shape = tuple(image_shape)
        self.encoder = nn.ModuleList(
            nn.Conv2d(c_in, c_out, k, stride=2, padding=k // 2)
            for c_in, c_out, k in zip(channels[:-1], channels[1:], kernel_sizes)
        )
        self.decoder = nn.ModuleList(
            nn.ConvTranspose2d(c_in, c_out, k, stride=2, padding=k // 2)
            for c_in, c_out, k in zip(channels[:0:-1], channels[-2::-1], kernel_sizes[::-1])
        )
        # Spatial sizes seen by each encoder layer, to invert them exactly.
        sizes = [tuple(image_shape[1:])]
        for _, k in zip(hidden_channels, kernel_sizes):
            sizes.append(tuple((s + 2 * (k // 2) - k) // 2 + 1 for s in sizes[-1]))
        self._sizes = sizes
        self.latent_shape = (channels[-1], *sizes[-1])
        self.n_latent = int(torch.Size(self.latent_shape).numel())

    def encode(self, x):
        """Map images ``(batch, C, H, W)`` to flat codes ``(batch, n_latent)``."""
        for layer in self.encoder:
            x = torch.relu(layer(x))
        return x.flatten(1)

    def decode(self, codes):
        """Map flat codes back to images of the input shape."""
        x = codes.reshape(-1, *self.latent_shape)
        last = len(self.decoder) - 1
        for i, layer in enumerate(self.decoder):
            x = layer(x, output_size=self._sizes[-2 - i])
            if i < last:
                x = torch.relu(x)
        return x

    def forward(self, x):
        return self.decode(self.encode(x))


class MLPAutoencoder(nn.Module):
    """Fully connected autoencoder for rows that are not images.

    Parameters
    ----------
    n_features : int
        Input dimension.
    hidden_units : sequence of int
        Widths of the encoder's layers; the last one is the latent dimension.
        The decoder mirrors them.
    image_shape : tuple of int or None, default=None
        Shape of one input image, when the inputs are images: the encoder
        flattens them and the decoder returns images of this shape
        (``n_features`` values each). None: inputs and outputs are rows.
    """

    def __init__(self, n_features, hidden_units, image_shape=None):
        super().__init__()
        widths = [n_features, *hidden_units]
        self.encoder = _mlp(widths)
        self.decoder = _mlp(widths[::-1])
        self.n_latent = widths[-1]
        self.image_shape = None if image_shape is None else tuple(image_shape)

    def encode(self, x):
        return self.encoder(x.flatten(1))

    def decode(self, codes):
        rows = self.decoder(codes)
        return rows if self.image_shape is None else rows.reshape(-1, *self.image_shape)

    def forward(self, x):
        return self.decode(self.encode(x))


def _mlp(widths):
    """Linear layers with ReLU between them and none after the last."""
    layers = []
    for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(w_in, w_out))
    return nn.Sequential(*layers)
