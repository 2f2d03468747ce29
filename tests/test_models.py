"""The networks: sizes, shapes, taps, init, channels_last and autocast, NSE receptive field."""
import math

import pytest
import torch

from authors_spsr_oracle import reference_json, vgg128_forward
from spsr_fast.models import (JIGSAW_PERMUTATIONS, NSE, NSE_RECEPTIVE_FIELD, NSE_STRIDE, ContrastivePredictor,
                              FeatureDiscriminator, JigsawHead, RRDBNet, SPSRNet, VGGDiscriminator,
                              VGGDiscriminator128)
from spsr_fast.models.spsrnet import default_taps


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def small_spsr(**kw):
    torch.manual_seed(0)
    return SPSRNet(**{"nf": 8, "nb": 4, "gc": 8, **kw}).eval()


# ---------------------------------------------------------------------------- sizes

def test_parameter_counts_match_the_paper_models():
    with torch.device("meta"):
        assert trainable(SPSRNet(nb=23)) == 24_796_230
        assert trainable(RRDBNet()) == 16_697_987  # ESRGAN's RRDB_ESRGAN_x4
        assert trainable(VGGDiscriminator128()) == 14_502_281
        assert trainable(VGGDiscriminator128(in_nc=3)) == 14_502_281  # gradient-map discriminator
        assert trainable(FeatureDiscriminator()) == 2_175_689


def test_default_taps():
    assert default_taps(23) == (5, 10, 15, 20)
    assert SPSRNet(nf=4, nb=23, gc=4).taps == (5, 10, 15, 20)
    for nb in range(1, 40):
        taps = default_taps(nb)
        assert len(taps) == 4 and list(taps) == sorted(taps) and 1 <= taps[0] and taps[-1] <= nb
    assert default_taps(8) == (2, 4, 6, 8)


@pytest.mark.parametrize("taps", [(1, 2, 3), (3, 2, 1, 4), (1, 2, 3, 9), (-1, 1, 2, 3), (1.0, 2, 3, 4)])
def test_bad_taps_are_refused(taps):
    with pytest.raises(ValueError, match="taps"):
        SPSRNet(nf=4, nb=4, gc=4, taps=taps)


@pytest.mark.parametrize("scale", [3, 0, 2.0])
def test_bad_scale_is_refused(scale):
    with pytest.raises(ValueError, match="scale"):
        RRDBNet(nf=4, nb=1, gc=4, scale=scale)


# ---------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("scale", [2, 4, 8])
def test_spsrnet_shapes(scale):
    model = small_spsr(scale=scale)
    x = torch.rand(2, 3, 6, 5)
    grad_map, sr, lr_grad = model(x)
    assert grad_map.shape == sr.shape == (2, 3, 6 * scale, 5 * scale)
    assert lr_grad.shape == x.shape


@pytest.mark.parametrize("scale,unshuffle", [(4, 1), (2, 1), (8, 1), (2, 2), (1, 4)])
def test_rrdbnet_shapes(scale, unshuffle):
    model = RRDBNet(nf=8, nb=2, gc=8, scale=scale, unshuffle=unshuffle).eval()
    assert model(torch.rand(1, 3, 8, 12)).shape == (1, 3, 8 * scale, 12 * scale)


def test_spsrnet_lr_grad_is_the_gradient_map_of_the_input():
    from spsr_fast.ops import gradient_map

    x = torch.rand(1, 3, 7, 9)
    assert torch.equal(small_spsr()(x)[2], gradient_map(x, padding=1))


def test_spsrnet_taps_feed_the_gradient_branch():
    """Changing taps changes only the gradient branch and what fuses it, never lr_grad."""
    from spsr_fast.models.blocks import kaiming_init_

    a, b = small_spsr(taps=(1, 2, 3, 4)), small_spsr(taps=(0, 1, 1, 4))
    kaiming_init_(a, 1.0)  # full-size weights, so the taps make a visible difference
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 3, 6, 6)
    out_a, out_b = a(x), b(x)
    assert ((out_a[0] - out_b[0]).norm() / out_a[0].norm()) > 1e-2
    assert torch.equal(out_a[2], out_b[2])


def test_sr_branch_initialised_from_rrdbnet():
    """The SR branch of SPSRNet is RRDBNet minus its last conv: after load_sr_branch the
    trunk features equal RRDBNet's before its conv_hr."""
    torch.manual_seed(0)
    rrdb, spsr = RRDBNet(nf=8, nb=3, gc=8), SPSRNet(nf=8, nb=3, gc=8)
    copied = spsr.load_sr_branch(rrdb)
    assert len(copied) == len([k for k in rrdb.state_dict() if not k.startswith("conv_last")])
    x = torch.rand(1, 3, 5, 5)
    with torch.no_grad():
        feat = spsr.conv_first(x)
        assert torch.equal(feat + spsr.trunk(feat)[0],
                           rrdb.conv_first(x) + rrdb.conv_body(rrdb.body(rrdb.conv_first(x))))
    with pytest.raises(ValueError, match="load_sr_branch"):
        spsr.load_sr_branch(RRDBNet(nf=8, nb=2, gc=8))


def test_sr_branch_needs_every_tensor_and_names_what_is_wrong():
    """An RRDBNet nb=1 x2 into an SPSRNet nb=3 x4 shares only some names and shapes: nothing is
    copied, and the error names the missing blocks and the missing x4 up-conv."""
    torch.manual_seed(0)
    spsr = SPSRNet(nf=8, nb=3, gc=8, scale=4)
    before = {k: v.clone() for k, v in spsr.state_dict().items()}
    source = RRDBNet(nf=8, nb=1, gc=8, scale=2).state_dict()
    with pytest.raises(ValueError) as info:
        spsr.load_sr_branch(source)
    message = str(info.value)
    assert "\n" not in message
    assert "missing 62 tensors of body.1, body.2, conv_up2" in message
    assert all(torch.equal(before[k], v) for k, v in spsr.state_dict().items())
    # mis-shaped (another nf) and foreign keys are named too
    wide = RRDBNet(nf=16, nb=3, gc=8).state_dict()
    with pytest.raises(ValueError, match=r"differ in shape.*conv_first.weight \(16, 3, 3, 3\) vs \(8, 3, 3, 3\)"):
        spsr.load_sr_branch(wide)
    extra = dict(RRDBNet(nf=8, nb=3, gc=8).state_dict(), **{"attention.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected 1 tensors of attention"):
        spsr.load_sr_branch(extra)
    with pytest.raises(ValueError, match="pixel-unshuffle"):
        spsr.load_sr_branch(RRDBNet(nf=8, nb=3, gc=8, scale=2, unshuffle=2))
    # a state dict that fits copies every SR-branch tensor, as the module does
    fits = RRDBNet(nf=8, nb=3, gc=8).state_dict()
    copied = spsr.load_sr_branch(fits)
    assert sorted(copied) == sorted(k for k in fits if not k.startswith("conv_last."))
    assert all(torch.equal(spsr.state_dict()[k], fits[k]) for k in copied)


# ---------------------------------------------------------------------------- init

def test_generator_init_is_kaiming_times_point_one():
    torch.manual_seed(0)
    model = SPSRNet(nf=32, nb=2, gc=32)
    conv = model.body[0].rdb1.conv5  # fan_in 32 * 5 * 9
    expected_std = 0.1 * math.sqrt(2.0 / (conv.in_channels * 9))
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    assert all(m.bias.abs().max() == 0 for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_discriminator_init_is_kaiming_and_unit_batchnorm():
    torch.manual_seed(0)
    d = VGGDiscriminator128(base_nf=16)
    w = d.features[5].weight
    assert w.std().item() == pytest.approx(math.sqrt(2.0 / (w.shape[1] * 9)), rel=0.1)
    bn = d.features[3]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


# ---------------------------------------------------------------------------- discriminators

@pytest.mark.parametrize("size", [128, 130])
def test_vgg128_matches_the_authors_computation(size):
    """Same numbers as their Discriminator_VGG_128 (eval mode) for 128x128 images and
    130x130 gradient maps, including the flatten order under channels_last."""
    torch.manual_seed(0)
    d = VGGDiscriminator128(base_nf=8).double()
    d.classifier[0] = torch.nn.Linear(8 * 8 * 16, 100).double()  # base_nf 8: 64 channels at 4x4
    with torch.no_grad():
        for m in d.modules():  # non-trivial running statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    d.eval()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    expected = vgg128_forward(d.state_dict(), x)
    torch.testing.assert_close(d(x), expected, rtol=1e-10, atol=1e-10)
    d_cl = d.to(memory_format=torch.channels_last)
    torch.testing.assert_close(d_cl(x.to(memory_format=torch.channels_last)), expected,
                               rtol=1e-10, atol=1e-10)


def test_vgg_discriminator_state_dict_is_the_authors_layout():
    reference = reference_json()
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in VGGDiscriminator128().state_dict().items()}
    for section in ("discriminator_image_Discriminator_VGG_128", "discriminator_gradient_Discriminator_VGG_128"):
        theirs = {e["key"]: tuple(e["shape"]) for e in reference[section]["state_dict"]}
        assert ours == theirs


def test_discriminators_refuse_the_wrong_input_size():
    d = FeatureDiscriminator(base_nf=8)
    assert d(torch.randn(2, 32, 32, 32)).shape == (2, 1)
    assert d(torch.randn(2, 32, 34, 34)).shape == (2, 1)
    with pytest.raises(ValueError, match="32x32"):
        d(torch.randn(2, 32, 64, 64))
    with pytest.raises(ValueError, match="input_size"):
        VGGDiscriminator(input_size=100)


# ---------------------------------------------------------------------------- NSE

def test_nse_output_and_receptive_field():
    torch.manual_seed(0)
    nse = NSE().double()
    x = torch.randn(1, 3, 96, 96, dtype=torch.float64, requires_grad=True)
    features = nse(x)
    assert features.shape == (1, 32, 96 // NSE_STRIDE, 96 // NSE_STRIDE)
    features[0, :, 12, 12].sum().backward()
    rows, cols = torch.nonzero(x.grad.abs().sum((0, 1)), as_tuple=True)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert (height.item(), width.item()) == (NSE_RECEPTIVE_FIELD, NSE_RECEPTIVE_FIELD)
    # centred on the feature's position: 4 * 12 + 1.5 is the centre of its 4x4 cell
    assert (rows.min() + rows.max()) / 2 == pytest.approx(NSE_STRIDE * 12 + 1, abs=1)


def test_heads():
    predictor, jigsaw = ContrastivePredictor(num_context=3), JigsawHead()
    assert predictor(torch.randn(5, 3, 32)).shape == (5, 32)
    assert predictor(torch.randn(5, 96)).shape == (5, 32)
    assert jigsaw(torch.randn(5, 4, 32)).shape == (5, 24)
    assert len(set(JIGSAW_PERMUTATIONS)) == 24 and JIGSAW_PERMUTATIONS[0] == (0, 1, 2, 3)
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in jigsaw.modules())
    assert n_linear == 3
    with pytest.raises(ValueError, match=r"JigsawHead: features must be \(N, 4, 32\)"):
        jigsaw(torch.randn(5, 3, 32))


# ---------------------------------------------------------------------------- memory formats, autocast

def full_scale(model):
    """Generators start at 0.1x kaiming, which leaves outputs near 1e-7 (below fp16's
    normal range); trained weights are larger, so test at full scale."""
    from spsr_fast.models.blocks import kaiming_init_

    kaiming_init_(model, 1.0)
    return model


NETWORKS = {
    "SPSRNet": lambda: (full_scale(small_spsr()), torch.rand(2, 3, 8, 8)),
    "RRDBNet": lambda: (full_scale(RRDBNet(nf=8, nb=2, gc=8)).eval(), torch.rand(2, 3, 8, 8)),
    "VGG128": lambda: (VGGDiscriminator128(base_nf=8).eval(), torch.rand(2, 3, 128, 128)),
    "FeatureD": lambda: (FeatureDiscriminator(base_nf=8).eval(), torch.randn(2, 32, 32, 32)),
    "NSE": lambda: (NSE().eval(), torch.rand(2, 3, 32, 32)),
}


def _outputs(out):
    return list(out) if isinstance(out, tuple) else [out]


@pytest.mark.parametrize("name", NETWORKS)
def test_channels_last_and_autocast_match_fp32(name):
    torch.manual_seed(0)
    model, x = NETWORKS[name]()
    with torch.no_grad():
        truth = _outputs(model.double()(x.double()))
        model.float()
        plain = _outputs(model(x))
        model_cl = model.to(memory_format=torch.channels_last)
        cl = _outputs(model_cl(x.to(memory_format=torch.channels_last)))
        low = {}
        for dtype in (torch.bfloat16, torch.float16):
            with torch.autocast("cpu", dtype=dtype):
                low[dtype] = _outputs(model_cl(x.to(memory_format=torch.channels_last)))
    for i, (t, p, c) in enumerate(zip(truth, plain, cl)):
        torch.testing.assert_close(c, p, rtol=1e-5, atol=1e-5 * p.abs().max().item())
        # autocast: relative error of the whole output within the half type's reach
        # (bf16 keeps 8 mantissa bits, fp16 11)
        for dtype, bound in ((torch.bfloat16, 3e-2), (torch.float16, 4e-3)):
            error = ((low[dtype][i].double() - t).norm() / t.norm()).item()
            assert error < bound, f"{name}: {dtype} autocast relative error {error:.3g}"


def test_every_parameter_trains():
    """Backward runs (in-place activations are safe) and reaches every parameter."""
    torch.manual_seed(0)
    model = full_scale(small_spsr()).train()
    grad_map, sr, _ = model(torch.rand(2, 3, 6, 6))
    (grad_map.square().mean() + sr.square().mean()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
