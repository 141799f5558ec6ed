"""The denoising backbone (mdm.nn.backbone): shapes, determinism, conditioning, scan switches, bad input."""

import dataclasses

import pytest
import torch

from mdm.config import BackboneConfig, ConfigError, load_config
from mdm.nn.backbone import Backbone
from mdm.nn.embeddings import grid_position_embedding
from mdm.nn.layout import SegmentSpec, SequenceLayout

SEGMENTS = [SegmentSpec.image(4, 4), SegmentSpec.text(8)]  # image content 0..15, text content 16..23
N_IMAGE, N_TEXT = 16, 8


def tiny(**overrides) -> BackboneConfig:
    """The shipped tiny preset (d_model 32, 4 layers), with overrides."""
    return dataclasses.replace(load_config("tiny").backbone, **overrides)


def make_layout(backbone: Backbone, extra_pads: int = 3) -> SequenceLayout:
    used = backbone.make_layout(SEGMENTS).length
    return backbone.make_layout(SEGMENTS, length=used + extra_pads)


def make_inputs(backbone: Backbone, layout: SequenceLayout, b: int = 2, dtype=torch.float32):
    d = backbone.config.d_model
    content = torch.randn(b, layout.n_content, d, dtype=dtype)
    content_t = torch.randint(0, 1000, (b, layout.n_content)).to(dtype)
    segment_t = torch.randint(0, 1000, (b, layout.n_segments)).to(dtype)
    return content, content_t, segment_t


# --------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("row_pad", [0, 2])
@pytest.mark.parametrize("long_skips", [False, True])
@pytest.mark.parametrize("kind", ["mamba2", "transformer"])
def test_output_shape(kind, long_skips, row_pad):
    backbone = Backbone(tiny(kind=kind, long_skips=long_skips, row_pad=row_pad))
    assert len(backbone.skip_proj) == (2 if long_skips else 0)
    layout = make_layout(backbone)
    assert layout.row_pad == row_pad
    content, content_t, segment_t = make_inputs(backbone, layout)
    with torch.no_grad():
        out = backbone(content, content_t, segment_t, layout)
    assert out.shape == (2, N_IMAGE + N_TEXT, 32)
    assert out.dtype == content.dtype
    assert torch.isfinite(out).all()


def test_long_skips_mirror_the_scan_cycle():
    backbone = Backbone(tiny(long_skips=True, n_layers=6))
    names = [p.name for p in backbone.patterns]
    assert names == ["1/1", "2/2", "3/1", "3/1", "2/2", "1/1"]
    assert Backbone(tiny(kind="transformer")).patterns is None


def test_batch_elements_do_not_interact():
    backbone = Backbone(tiny())
    layout = make_layout(backbone)
    content, content_t, segment_t = make_inputs(backbone, layout, b=3)
    labels = torch.tensor([0, 5, 10])
    with torch.no_grad():
        together = backbone(content, content_t, segment_t, layout, labels)
        alone = backbone(content[1:2], content_t[1:2], segment_t[1:2], layout, labels[1:2])
    # float32; a different batch size may block the matmuls differently: rounding only.
    assert torch.allclose(together[1:2], alone, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- determinism and conditioning

@pytest.mark.parametrize("kind", ["mamba2", "transformer"])
def test_deterministic_by_seed(kind):
    config = tiny(kind=kind)
    torch.manual_seed(123)
    a = Backbone(config)
    torch.manual_seed(123)
    b = Backbone(config)
    torch.manual_seed(124)
    c = Backbone(config)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)  # the seed matters
    layout = make_layout(a)
    inputs = make_inputs(a, layout)
    with torch.no_grad():
        assert torch.equal(a(*inputs, layout), b(*inputs, layout))


def test_null_class_default_and_class_dependence():
    backbone = Backbone(tiny())
    assert backbone.null_class == 10
    layout = make_layout(backbone)
    inputs = make_inputs(backbone, layout)
    with torch.no_grad():
        default = backbone(*inputs, layout)
        explicit = backbone(*inputs, layout, torch.full((2,), 10, dtype=torch.long))
        three = backbone(*inputs, layout, torch.tensor([3, 3]))
        seven = backbone(*inputs, layout, torch.tensor([7, 3]))
    assert torch.equal(default, explicit)
    assert not torch.allclose(default, three)
    assert not torch.allclose(three[0], seven[0])  # the label of item 0 changed
    assert torch.allclose(three[1], seven[1], rtol=1e-5, atol=1e-5)  # item 1 did not


@pytest.mark.parametrize("kind", ["mamba2", "bimamba2", "transformer"])
def test_class_modulation_starts_as_the_token_only_network_and_reaches_every_position(kind):
    torch.manual_seed(0)
    token_only = Backbone(tiny(kind=kind))
    torch.manual_seed(0)
    modulated = Backbone(tiny(kind=kind, class_modulation=True))
    assert set(modulated.state_dict()) - set(token_only.state_dict()) == {"class_modulation.weight"}
    modulated.load_state_dict(token_only.state_dict(), strict=False)  # the same weights, modulation still zero
    layout = make_layout(modulated)
    inputs = make_inputs(modulated, layout)
    labels = torch.tensor([3, 7])
    with torch.no_grad():
        torch.testing.assert_close(modulated(*inputs, layout, labels), token_only(*inputs, layout, labels))
        # Blind the CLS token (every class the same embedding): only the modulation can tell classes apart.
        for net in (token_only, modulated):
            net.class_embed.weight.copy_(net.class_embed.weight[:1].expand_as(net.class_embed.weight))
        modulated.class_modulation.weight.normal_()
        for net in (token_only, modulated):  # the adaLN maps start at zero: give them weights, the same in both
            for adaln in (net.adaln, net.adaln_out):
                adaln.linear.weight.copy_(torch.randn(adaln.linear.weight.shape,
                                                      generator=torch.Generator().manual_seed(1)) * 0.1)
        a, b = (net(*inputs, layout, labels) for net in (token_only, modulated))
        a7, b7 = (net(*inputs, layout, torch.tensor([7, 7])) for net in (token_only, modulated))
    torch.testing.assert_close(a[0], a7[0])  # the token-only network cannot see the class any more
    assert ((b[0] - b7[0]).abs().amax(-1) > 1e-4).all()  # the modulated one sees it at every position
    torch.testing.assert_close(b[1], b7[1])  # and only in the sample whose class changed


def test_clean_text_mean_pools_only_clean_text_positions():
    backbone = Backbone(tiny())
    layout = make_layout(backbone)
    content = torch.randn(3, layout.n_content, 32)
    content_t = torch.full((3, layout.n_content), 5.0)
    content_t[0, N_IMAGE:] = 0  # sample 0: all its text clean
    content_t[1, N_IMAGE:N_IMAGE + 3] = 0  # sample 1: three text positions clean
    content_t[2, :N_IMAGE] = 0  # sample 2: clean image, noised text
    mean = Backbone.clean_text_mean(content, content_t, layout)
    torch.testing.assert_close(mean[0], content[0, N_IMAGE:].mean(0))
    torch.testing.assert_close(mean[1], content[1, N_IMAGE:N_IMAGE + 3].mean(0))
    assert (mean[2] == 0).all()


@pytest.mark.parametrize("kind", ["mamba2", "bimamba2", "transformer"])
@pytest.mark.parametrize("with_class", [False, True])
def test_text_modulation_starts_as_the_network_without_it_and_reaches_every_position(kind, with_class):
    torch.manual_seed(0)
    plain = Backbone(tiny(kind=kind, class_modulation=with_class))
    torch.manual_seed(0)
    modulated = Backbone(tiny(kind=kind, class_modulation=with_class, text_modulation=True))
    assert set(modulated.state_dict()) - set(plain.state_dict()) == {"text_modulation.weight"}
    modulated.load_state_dict(plain.state_dict(), strict=False)
    layout = make_layout(modulated)
    content, content_t, segment_t = make_inputs(modulated, layout)
    content_t[0, N_IMAGE:] = 0  # sample 0 is given its text; sample 1's text is noised
    labels = torch.tensor([3, 7])
    with torch.no_grad():
        torch.testing.assert_close(modulated(content, content_t, segment_t, layout, labels),
                                   plain(content, content_t, segment_t, layout, labels))
        modulated.text_modulation.weight.normal_()
        for net in (plain, modulated):  # the adaLN maps start at zero: give them weights, the same in both
            for adaln in (net.adaln, net.adaln_out):
                adaln.linear.weight.copy_(torch.randn(adaln.linear.weight.shape,
                                                      generator=torch.Generator().manual_seed(1)) * 0.1)
            if with_class:
                net.class_modulation.weight.normal_(generator=torch.Generator().manual_seed(2))
        a, b = (net(content, content_t, segment_t, layout, labels) for net in (plain, modulated))
    assert ((a[0] - b[0]).abs().amax(-1) > 1e-4).all()  # the clean text reaches every position of its sample
    torch.testing.assert_close(a[1], b[1])  # a noised (or dropped) text adds nothing


def test_grid_position_embedding_separates_place_and_frame():
    coords = torch.tensor([[0, 1, 2], [3, 1, 2], [0, 2, 1], [3, 2, 1], [-1, -1, -1], [0, 2, 2]])
    e = grid_position_embedding(coords, 16)
    torch.testing.assert_close(e[1] - e[0], e[3] - e[2])  # a frame apart is the same offset at every place
    assert (e[4] == 0).all()  # off the grid
    assert torch.cdist(e[[0, 1, 2, 3, 5]], e[[0, 1, 2, 3, 5]]).fill_diagonal_(1.0).min() > 0.1  # places differ


def test_grid_pos_embed_adds_no_weights_and_reaches_only_grids():
    torch.manual_seed(0)
    plain = Backbone(tiny())
    torch.manual_seed(0)
    gridded = Backbone(tiny(grid_pos_embed=True))
    assert plain.state_dict().keys() == gridded.state_dict().keys()
    gridded.load_state_dict(plain.state_dict())
    layout = make_layout(gridded)
    inputs = make_inputs(gridded, layout)
    text_only = gridded.make_layout([SegmentSpec.text(8)])
    text_inputs = make_inputs(gridded, text_only)
    with torch.no_grad():
        assert not torch.allclose(plain(*inputs, layout), gridded(*inputs, layout))
        torch.testing.assert_close(plain(*text_inputs, text_only), gridded(*text_inputs, text_only))


def test_time_levels_condition_the_output():
    backbone = Backbone(tiny())
    with torch.no_grad():  # adaLN starts at zero; give it weights so that per-position modulation acts
        backbone.adaln.linear.weight.normal_(0, 0.02)
    layout = make_layout(backbone)
    content, content_t, segment_t = make_inputs(backbone, layout)
    with torch.no_grad():
        base = backbone(content, content_t, segment_t, layout)
        changed_t = content_t.clone()
        changed_t[:, 20] += 100
        other = backbone(content, changed_t, segment_t, layout)
    assert not torch.allclose(base, other)


# --------------------------------------------------------------------------- the key property (DESIGN §1.6)

def grad_of_first_image_position(backbone: Backbone):
    layout = make_layout(backbone)
    content, content_t, segment_t = make_inputs(backbone, layout, b=1)
    content.requires_grad_()
    out = backbone(content, content_t, segment_t, layout)
    (grad,) = torch.autograd.grad(out[:, 0].sum(), content)
    return grad[0, :N_IMAGE], grad[0, N_IMAGE:]


def test_scan_switches_let_the_image_see_the_caption_after_it():
    image_grad, text_grad = grad_of_first_image_position(Backbone(tiny(scan_patterns="1234/12")))
    assert image_grad[0].abs().max() > 0
    assert text_grad.abs().max() > 1e-6 * image_grad.abs().max()


def test_forward_only_scan_never_sees_the_caption_after_the_image():
    backbone = Backbone(tiny(scan_patterns="1/1"))
    image_grad, text_grad = grad_of_first_image_position(backbone)
    assert image_grad[0].abs().max() > 0  # non-vacuous
    assert torch.equal(text_grad, torch.zeros_like(text_grad))  # exactly zero: the scan is causal
    # ...while the caption does see the image before it.
    layout = make_layout(backbone)
    content, content_t, segment_t = make_inputs(backbone, layout, b=1)
    content.requires_grad_()
    out = backbone(content, content_t, segment_t, layout)
    (grad,) = torch.autograd.grad(out[:, N_IMAGE].sum(), content)
    assert grad[0, :N_IMAGE].abs().max() > 0


def test_transformer_backbone_sees_the_caption():
    _, text_grad = grad_of_first_image_position(Backbone(tiny(kind="transformer")))
    assert text_grad.abs().max() > 0


# --------------------------------------------------------------------------- bad input

def test_bad_input_raises():
    backbone = Backbone(tiny())
    layout = make_layout(backbone)
    content, content_t, segment_t = make_inputs(backbone, layout)
    n = layout.n_content
    with pytest.raises(ValueError, match=rf"content must be \(batch, {n}, 32\)"):
        backbone(content[:, :-1], content_t, segment_t, layout)
    with pytest.raises(ValueError, match=rf"content must be \(batch, {n}, 32\)"):
        backbone(content[..., :-1], content_t, segment_t, layout)
    with pytest.raises(TypeError, match="content must be floating point"):
        backbone(content.long(), content_t, segment_t, layout)
    with pytest.raises(ValueError, match=r"content_t must be \(batch, n_content\)"):
        backbone(content, content_t[:, :-1], segment_t, layout)
    with pytest.raises(ValueError, match=r"segment_t must be \(batch, n_segments\)"):
        backbone(content, content_t, segment_t[:, :1], layout)
    with pytest.raises(ValueError, match=r"class labels must be in \[0, 10\]"):
        backbone(content, content_t, segment_t, layout, torch.tensor([0, 11]))
    with pytest.raises(ValueError, match=r"class labels must be in \[0, 10\]"):
        backbone(content, content_t, segment_t, layout, torch.tensor([-2, 0]))
    # -1 is the collate's NO_LABEL: the null class, not an error
    with torch.no_grad():
        torch.testing.assert_close(backbone(content, content_t, segment_t, layout, torch.tensor([-1, 10])),
                                   backbone(content, content_t, segment_t, layout, torch.tensor([10, 10])))
    with pytest.raises(ValueError, match="class_labels must be a"):
        backbone(content, content_t, segment_t, layout, torch.tensor([0]))


def test_layout_longer_than_max_seq_len_raises():
    backbone = Backbone(tiny(max_seq_len=40))
    layout = make_layout(backbone, extra_pads=40 - 31 + 1)  # 41 positions
    assert layout.length == 41
    content, content_t, segment_t = make_inputs(backbone, layout)
    with pytest.raises(ValueError, match="41 positions but backbone.max_seq_len is 40"):
        backbone(content, content_t, segment_t, layout)
    ok = make_layout(backbone, extra_pads=9)  # exactly 40 is fine
    with torch.no_grad():
        assert backbone(content, content_t, segment_t, ok).shape == (2, 24, 32)


def test_layout_row_pad_mismatch_raises():
    backbone = Backbone(tiny(row_pad=2))
    layout = SequenceLayout(SEGMENTS, row_pad=0)
    content, content_t, segment_t = make_inputs(backbone, layout)
    with pytest.raises(ValueError, match="layout has row_pad=0 but backbone.row_pad is 2"):
        backbone(content, content_t, segment_t, layout)


# --------------------------------------------------------------------------- scan switches inside the backbone

@pytest.mark.parametrize("long_skips", [False, True])
def test_blocks_read_their_scan_order(long_skips):
    """Each block gets the sequence (and the noise levels) in its own scan order: the backbone's
    one-gather-between-blocks path equals permuting before every block and undoing it after."""
    from mdm.nn.scan import inverse_permutation

    backbone = Backbone(tiny(long_skips=long_skips, n_layers=4, row_pad=1)).double()
    with torch.no_grad():  # non-zero adaLN so that a misaligned noise level would change the output
        backbone.adaln.linear.weight.normal_(0, 0.05)
    layout = make_layout(backbone)
    content, content_t, segment_t = make_inputs(backbone, layout, dtype=torch.float64)
    content_t[0, :N_IMAGE] = 0.0  # several distinct levels, laid out unevenly
    captured, final = [], []
    hooks = [block.register_forward_pre_hook(lambda m, args: captured.append(args)) for block in backbone.blocks]
    hooks.append(backbone.norm_out.register_forward_pre_hook(lambda m, args: final.append(args[0])))
    with torch.no_grad():
        backbone(content, content_t, segment_t, layout)
    for h in hooks:
        h.remove()

    switch = backbone.scan_switch(layout, torch.device("cpu"))
    inv0 = inverse_permutation(switch.orders[0])
    x = captured[0][0][:, inv0]  # canonical input of the first block
    modulation = captured[0][1]
    levels = captured[0][2][:, inv0]
    t_pos = layout.position_times(content_t, segment_t)
    assert torch.equal(torch.unique(t_pos, return_inverse=True)[1], levels)  # canonical levels line up

    n, n_skips = len(backbone.blocks), len(backbone.skip_proj)
    skips = []
    with torch.no_grad():
        for i, block in enumerate(backbone.blocks):
            order = switch.orders[i]
            inv = inverse_permutation(order)
            xi = x[:, order]
            if i >= n - n_skips:
                xi = backbone.skip_proj[n - 1 - i](torch.cat([xi, skips.pop()[:, order]], dim=-1))
            assert torch.equal(captured[i][0], xi), i
            assert torch.equal(captured[i][2], levels[:, order]), i
            y = block(xi, modulation, levels[:, order])
            x = y[:, inv]
            if i < n_skips:
                skips.append(x)
    # Same per-position arithmetic on permuted rows: equal up to rounding (float64).
    assert torch.allclose(final[0], x, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["mamba2", "bimamba2"])
def test_the_scan_init_ranges_reach_every_head(kind):
    """``backbone.dt_init`` / ``a_init`` set where each head's step and decay start; the defaults are the public
    Mamba-2's, and a bad range is refused naming the field."""
    from mdm.config import ConfigError

    for dt_range, a_range in (([0.001, 0.1], [1.0, 16.0]), ([0.0005, 0.002], [1.0, 2.0])):
        torch.manual_seed(0)
        backbone = Backbone(tiny(kind=kind, dt_init=dt_range, a_init=a_range))
        for block in backbone.blocks:
            for scan in [block.mixer] if kind == "mamba2" else [block.mixer.forward_scan, block.mixer.backward_scan]:
                dt = torch.nn.functional.softplus(scan.dt_bias.detach())
                A = scan.A_log.detach().exp()
                assert dt.min() >= dt_range[0] * 0.999 and dt.max() <= dt_range[1] * 1.001
                assert A.min() >= a_range[0] * 0.999 and A.max() <= a_range[1] * 1.001
    assert tiny().dt_init == [0.001, 0.1] and tiny().a_init == [1.0, 16.0]
    for bad in (["backbone.dt_init=[0.1,0.01]"], ["backbone.a_init=[0,4]"], ["backbone.a_init=3"]):
        with pytest.raises(ConfigError, match=bad[0].split("=")[0]):
            load_config("tiny", bad)


def test_attention_pooling_starts_as_the_mean_and_can_single_out_a_position():
    net = Backbone(tiny(text_modulation=True, text_pooling="attention"))
    layout = make_layout(net)
    content = torch.randn(3, layout.n_content, 32)
    content_t = torch.full((3, layout.n_content), 5.0)
    content_t[:2, N_IMAGE:] = 0  # samples 0 and 1 are given their text; sample 2's is noised
    with torch.no_grad():
        torch.testing.assert_close(net.pooled_text(content, content_t, layout),
                                   Backbone.clean_text_mean(content, content_t, layout))
        key = N_IMAGE + 2  # make one text position stand out along every head's query
        net.text_query.copy_(torch.ones_like(net.text_query) * 50.0)
        content[0, key] = 5.0
        pooled = net.pooled_text(content, content_t, layout)
    torch.testing.assert_close(pooled[0], content[0, key], atol=1e-3, rtol=0)
    assert (pooled[2] == 0).all() and pooled.isfinite().all()  # a sample without clean text pools to zeros


def test_attention_pooling_query_learns_once_the_projection_does():
    torch.manual_seed(0)
    net = Backbone(tiny(text_modulation=True, text_pooling="attention"))
    with torch.no_grad():
        net.text_modulation.weight.normal_()
        for adaln in (net.adaln, net.adaln_out):
            adaln.linear.weight.normal_(std=0.1)
    layout = make_layout(net)
    content, content_t, segment_t = make_inputs(net, layout)
    content_t[:, N_IMAGE:] = 0
    net(content, content_t, segment_t, layout).square().sum().backward()
    assert net.text_query.grad is not None and net.text_query.grad.abs().sum() > 0


@pytest.mark.parametrize("overrides, message", [
    ({"text_pooling": "max"}, "text_pooling must be mean or attention"),
    ({"text_pooling": "attention"}, "text_modulation, which is off"),
    ({"text_pooling": "attention", "text_modulation": True, "head_dim": 24}, "not a multiple of head_dim"),
])
def test_text_pooling_config_errors_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny(**overrides)
