"""The networks of spsr-fast, one architecture per module.

ARCHITECTURES maps the `arch` name stored in our checkpoints to the class that
rebuilds the network from its stored config.
"""
from .blocks import RDB, RRDB, rdb_forward, rrdb_forward
from .discriminator_vgg import FeatureDiscriminator, VGGDiscriminator, VGGDiscriminator128
from .nse import JIGSAW_PERMUTATIONS, NSE, NSE_RECEPTIVE_FIELD, NSE_STRIDE, ContrastivePredictor, JigsawHead
from .rrdbnet import RRDBNet
from .spsrnet import SPSRNet

ARCHITECTURES = {cls.arch: cls for cls in (RRDBNet, SPSRNet, VGGDiscriminator, NSE,
                                           ContrastivePredictor, JigsawHead)}

__all__ = ["ARCHITECTURES", "RDB", "RRDB", "rdb_forward", "rrdb_forward", "RRDBNet", "SPSRNet",
           "VGGDiscriminator", "VGGDiscriminator128", "FeatureDiscriminator", "NSE", "NSE_STRIDE",
           "NSE_RECEPTIVE_FIELD", "JIGSAW_PERMUTATIONS", "ContrastivePredictor", "JigsawHead"]
