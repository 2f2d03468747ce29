"""Training losses of SPSR (docs/ARCHITECTURE.md 4): pixel, perceptual (VGG19 conv5_4), RaGAN, gradient-space."""
from .gan import ragan_discriminator_loss, ragan_generator_loss
from .gradient import gradient_branch_loss, gradient_pixel_loss
from .perceptual import PerceptualLoss, VGGFeatureExtractor, VGGWeightsUnavailable
from .pixel import pixel_loss
from .pretrained import PretrainedWeightsUnavailable

__all__ = [
    "pixel_loss", "PerceptualLoss", "VGGFeatureExtractor", "VGGWeightsUnavailable", "PretrainedWeightsUnavailable",
    "ragan_generator_loss", "ragan_discriminator_loss", "gradient_pixel_loss", "gradient_branch_loss",
]
