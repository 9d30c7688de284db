"""The decoupled attention equals the official algorithm (diffusers' IPAdapterAttnProcessor2_0, an
independent implementation) inside a real UNet, and lambda = 0 is the unpatched model bit for bit."""
import pytest
import torch

from ip_core import IPAdapter, decoupled_attention, layer_specs_from_unet, make_config, multihead_attention

diffusers = pytest.importorskip("diffusers")


def tiny_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    ).eval()


class OurProcessor:
    """What every host does with ip_core: q/k/v from the layer, our function, then the layer's to_out."""

    def __init__(self, k_ip, v_ip, tokens_ref, weight):
        self.k_ip, self.v_ip, self.tokens_ref, self.weight = k_ip, v_ip, tokens_ref, weight

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        q, k, v = attn.to_q(hidden_states), attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        tokens = self.tokens_ref[0]
        out = decoupled_attention(q, k, v, self.k_ip(tokens), self.v_ip(tokens), attn.heads, self.weight)
        return attn.to_out[1](attn.to_out[0](out)) / attn.rescale_output_factor


def install_ours(unet, adapter, tokens_ref, weight):
    procs = dict(unet.attn_processors)
    for spec in adapter.layers:
        w = adapter.ip_layers[str(spec.key_number)]
        procs[spec.diffusers_name] = OurProcessor(w.to_k_ip, w.to_v_ip, tokens_ref, weight)
    unet.set_attn_processor(procs)


@pytest.fixture(scope="module")
def setup():
    unet = tiny_unet()
    layers = layer_specs_from_unet(unet)
    torch.manual_seed(1)
    adapter = IPAdapter(make_config("base", layers, 32, 24), layers).eval()
    with torch.no_grad():  # non-trivial LayerNorm so the tokens are not just normalised noise
        adapter.image_proj.norm.weight.normal_(1.0, 0.2)
        adapter.image_proj.norm.bias.normal_(0.0, 0.2)
    x = torch.randn(2, 4, 8, 8)
    t = torch.tensor([10, 500])
    text = torch.randn(2, 7, 32)
    image_embeds = torch.randn(2, 24)
    return unet, adapter, x, t, text, image_embeds


@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0])
def test_unet_output_equals_diffusers_ip_adapter(setup, scale):
    unet, adapter, x, t, text, image_embeds = setup
    with torch.no_grad():
        tokens = adapter.project(image_embeds)
        ours_unet = tiny_unet()
        install_ours(ours_unet, adapter, [tokens], scale)
        ours = ours_unet(x, t, encoder_hidden_states=text).sample

        ref_unet = tiny_unet()
        ref_unet._load_ip_adapter_weights([adapter.released_state_dict()])
        for proc in ref_unet.attn_processors.values():
            if hasattr(proc, "scale"):
                proc.scale = [scale]
        ref = ref_unet(x, t, encoder_hidden_states=text, added_cond_kwargs={"image_embeds": [image_embeds[:, None]]}).sample
    n_ip = sum(hasattr(p, "to_k_ip") for p in ref_unet.attn_processors.values())
    assert n_ip == len(adapter.layers) == 7
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_lambda_zero_is_the_unpatched_unet_bit_for_bit(setup):
    unet, adapter, x, t, text, image_embeds = setup
    with torch.no_grad():
        plain = tiny_unet()(x, t, encoder_hidden_states=text).sample
        patched = tiny_unet()
        install_ours(patched, adapter, [adapter.project(image_embeds)], 0.0)
        assert torch.equal(patched(x, t, encoder_hidden_states=text).sample, plain)


def test_weight_zero_does_not_compute_the_image_branch():
    calls = []

    def counting(q, k, v, heads):
        calls.append(k.shape[1])
        return multihead_attention(q, k, v, heads)

    q, k, v = torch.randn(2, 16, 32), torch.randn(2, 7, 32), torch.randn(2, 7, 32)
    ip = torch.randn(2, 4, 32)
    out = decoupled_attention(q, k, v, ip, ip, 4, 0.0, attention=counting)
    assert calls == [7] and torch.equal(out, multihead_attention(q, k, v, 4))
    decoupled_attention(q, k, v, ip, ip, 4, 0.5, attention=counting)
    assert calls == [7, 7, 4]


def test_paper_formula_per_sample_weights_and_masks():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 10, 16), torch.randn(3, 5, 16), torch.randn(3, 5, 16)
    ip_k, ip_v = torch.randn(1, 4, 16), torch.randn(1, 4, 16)  # shared by the batch

    def naive(q, k, v, heads):  # softmax(QK^T / sqrt(d)) V per head, written out
        b, l, inner = q.shape
        d = inner // heads
        qh, kh, vh = (t.expand(b, -1, -1).reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
        w = torch.softmax(qh @ kh.transpose(-1, -2) / d**0.5, dim=-1)
        return (w @ vh).transpose(1, 2).reshape(b, l, inner)

    weight = torch.tensor([0.0, 0.5, 2.0])
    mask = torch.rand(3, 10, 1)
    got = decoupled_attention(q, k, v, ip_k, ip_v, 2, weight, spatial_mask=mask)
    want = naive(q, k, v, 2) + weight.view(3, 1, 1) * mask * naive(q, ip_k, ip_v, 2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert torch.equal(got[0], multihead_attention(q, k, v, 2)[0])  # per-sample lambda 0 keeps that sample exact
