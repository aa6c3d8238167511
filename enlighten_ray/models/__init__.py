"""Networks of EnlightenGAN: the attention-guided U-Net generator, the two no-norm
discriminators and the frozen VGG16 features of the self feature preserving loss."""

from enlighten_ray.models.discriminator import NoNormDiscriminator, global_discriminator, local_discriminator
from enlighten_ray.models.generator import EnlightenGenerator, attention_map, check_strength
from enlighten_ray.models.vgg import VGGFeatures

__all__ = [
    "EnlightenGenerator",
    "NoNormDiscriminator",
    "VGGFeatures",
    "attention_map",
    "check_strength",
    "global_discriminator",
    "local_discriminator",
]
