"""Structure loss of SPSR-P / SPSR-J: zero for identical images, gradients only into the generator."""
import pytest
import torch
from torch import nn

from spsr_fast.models import NSE, FeatureDiscriminator
from spsr_fast.nse.structure_loss import StructureLoss


def make(pixel_weight=1e-2, gan_weight=5e-3, criterion="l1"):
    torch.manual_seed(0)
    return StructureLoss(NSE(width=8, out_channels=8), pixel_weight, gan_weight, criterion)


def test_identical_images_give_zero_pixel_structure_loss():
    loss = make(gan_weight=0)
    hr = torch.rand(2, 3, 32, 32)
    sr = hr.clone().requires_grad_(True)
    for criterion in ("l1", "l2"):
        loss.criterion = criterion
        terms = loss.generator_terms(*loss.features(sr, hr))
        assert terms["l_g_struct_pix"].item() == 0.0
        grad, = torch.autograd.grad(terms["l_g_struct_pix"], sr)
        assert grad.abs().max().item() == 0.0
    assert loss.generator_terms(*loss.features(hr + 0.1 * torch.rand_like(hr), hr))["l_g_struct_pix"] > 0


def test_gradients_reach_only_the_generator():
    loss = make()
    generator = nn.Conv2d(3, 3, 3, padding=1)
    discriminator = FeatureDiscriminator(in_nc=8, base_nf=4, input_size=8).requires_grad_(False)
    hr = torch.rand(2, 3, 32, 32)
    total = loss(generator(hr + 0.05 * torch.randn_like(hr)), hr, discriminator)
    total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.parameters())
    assert all(p.grad is None for p in loss.nse.parameters())
    assert all(p.grad is None for p in discriminator.parameters())
    assert not any(p.requires_grad for p in loss.parameters())


def test_nse_stays_in_eval_mode_and_weights_are_checked():
    loss = make()
    loss.train()
    assert not loss.training and not loss.nse.training
    with pytest.raises(ValueError, match="feature discriminator"):
        loss(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="weights"):
        make(pixel_weight=-1)
    with pytest.raises(ValueError, match="criterion"):
        make(criterion="l3")
    only_pixel = make(gan_weight=0)
    assert set(only_pixel.generator_terms(*only_pixel.features(torch.rand(1, 3, 32, 32),
                                                               torch.rand(1, 3, 32, 32)))) == {"l_g_struct_pix"}
