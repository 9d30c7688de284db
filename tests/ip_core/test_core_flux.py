"""Flux IP-Adapters in ip_core: detection of the XLabs and InstantX layouts (files as users have them), the
projections, and the image term against diffusers (XLabs) and the InstantX processor's math (reduced widths)."""
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ip_core.families import load_adapter
from ip_core.families import detect_config
from ip_core.errors import UnsupportedAdapterError
from ipa_factories import randomize
from ip_core.attention import rms_heads
from ip_core.families.flux import (KEY_NORM_EPS, FluxIPAdapter, flux_image_term, make_flux_config, undo_rope)

HIDDEN, HEADS, CTX = 64, 4, 32


def _xlabs_file(tmp_path, tokens=4, blocks=19):
    """A flat safetensors file with XLabs' key names (reduced widths)."""
    a = randomize(FluxIPAdapter(make_flux_config("flux-xlabs", blocks, 0, HIDDEN, CTX, 768, tokens)))
    sd = a.released_state_dict()
    flat = {f"ip_adapter_proj_model.{k}": v for k, v in sd["image_proj"].items()}
    for k, v in sd["ip_adapter"].items():
        i, name, part = k.split(".")
        flat[f"double_blocks.{i}.processor.ip_adapter_double_stream_{name[3]}_proj.{part}"] = v
    path = tmp_path / "ip_adapter.safetensors"
    save_file(flat, str(path))
    return path, a


@pytest.mark.parametrize("tokens, version", [(4, "v1"), (16, "v2")])
def test_xlabs_file_is_detected_and_loads(tmp_path, tokens, version):
    path, a = _xlabs_file(tmp_path, tokens)
    loaded = load_adapter(path)
    c = loaded.config
    assert isinstance(loaded, FluxIPAdapter) and c.variant == "flux-xlabs" and c.base_model == "flux"
    assert (c.num_tokens, c.double_blocks, c.single_blocks, c.kv_bias, c.key_norm) == (tokens, 19, 0, True, False)
    assert c.description == (f"Flux XLabs flux-ip-adapter {version}, {tokens} tokens, 19 double blocks, "
                             "needs ViT-L/14 image_embeds (width 768)")
    for k, v in a.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_released_shapes_are_detected_without_memory():
    for variant, double, single, tokens, encoder in (("flux-xlabs", 19, 0, 16, "ViT-L/14"),
                                                     ("flux-instantx", 19, 38, 128, "SigLIP so400m-patch14-384")):
        with torch.device("meta"):
            sd = FluxIPAdapter(make_flux_config(variant, double, single, num_tokens=tokens)).released_state_dict()
        c = detect_config(sd)
        assert (c.variant, c.double_blocks, c.single_blocks, c.num_tokens, c.context_dim, c.hidden_size) == \
            (variant, double, single, tokens, 4096, 3072)
        assert c.encoder_name == encoder and c.signature.startswith("flux/")


def test_instantx_layout_keys_and_projection():
    c = make_flux_config("flux-instantx", 2, 4, HIDDEN, CTX, 1152, 8, head_dim=16)
    a = randomize(FluxIPAdapter(c))
    sd = a.released_state_dict()
    assert sorted(sd["image_proj"]) == ["norm.bias", "norm.weight", "proj.0.bias", "proj.0.weight", "proj.2.bias", "proj.2.weight"]
    assert set(sd["ip_adapter"]) == {f"{i}.to_{kv}_ip.weight" for i in range(6) for kv in "kv"}
    wide = make_flux_config("flux-instantx", 2, 4, 128, CTX, 1152, 8)
    assert detect_config(FluxIPAdapter(wide).released_state_dict()) == wide  # files do not say; Flux's heads are 128
    with pytest.raises(UnsupportedAdapterError, match="not a whole number of Flux's 128-wide heads"):
        detect_config(sd)  # 64 wide: no 128-wide head fits (it would fail at the first step)
    # InstantX's MLPProjModel: Linear(E, 2E), GELU, Linear(2E, N*ctx), reshape, LayerNorm(ctx)
    x = torch.randn(3, 1152)
    p = a.image_proj.state_dict()
    h = F.linear(F.gelu(F.linear(x, p["proj.0.weight"], p["proj.0.bias"])), p["proj.2.weight"], p["proj.2.bias"])
    ref = F.layer_norm(h.reshape(-1, 8, CTX), (CTX,), p["norm.weight"], p["norm.bias"])
    assert torch.allclose(a.project(x), ref, atol=1e-6)


def test_bad_flux_files_are_refused():
    c = make_flux_config("flux-xlabs", 3, 0, HIDDEN, CTX, 768, 4)
    sd = FluxIPAdapter(c).released_state_dict()
    broken = {"image_proj": sd["image_proj"], "ip_adapter": {k: v for k, v in sd["ip_adapter"].items() if not k.startswith("1.to_v")}}
    with pytest.raises(UnsupportedAdapterError, match="block 1 needs"):
        detect_config(broken)
    unknown = {"image_proj": sd["image_proj"], "ip_adapter": {**sd["ip_adapter"], "0.to_q_ip.bias": torch.zeros(HIDDEN)}}
    with pytest.raises(UnsupportedAdapterError, match="new layout"):
        detect_config(unknown)
    c = make_flux_config("flux-instantx", 2, 3, 128, CTX, 1152, 4)
    with pytest.raises(UnsupportedAdapterError, match="19 \\+ 38"):
        detect_config(FluxIPAdapter(c).released_state_dict())


def _rope(x, pe):
    """The host's rotation (comfy/ldm/flux/math.py apply_rope1), restated."""
    r = x.reshape(*x.shape[:-1], -1, 1, 2)
    return (pe[..., 0] * r[..., 0] + pe[..., 1] * r[..., 1]).reshape(*x.shape)


def test_undo_rope_inverts_the_hosts_rotation():
    g = torch.Generator().manual_seed(1)
    b, h, length, d = 2, 3, 10, 16
    angle = torch.rand(b, 1, length, d // 2, generator=g) * 50
    pe = torch.stack([torch.cos(angle), -torch.sin(angle), torch.sin(angle), torch.cos(angle)], -1).reshape(b, 1, length, d // 2, 2, 2)
    x = torch.randn(b, h, length, d, generator=g)
    back = undo_rope(_rope(x, pe), pe)
    assert (back - x).abs().max() / x.abs().max() < 1e-6


def test_xlabs_term_equals_diffusers_flux_ip_adapter_processor():
    from diffusers.models.transformers.transformer_flux import FluxAttention, FluxIPAdapterAttnProcessor

    torch.manual_seed(0)
    c = make_flux_config("flux-xlabs", 1, 0, HIDDEN, CTX, 768, 4)
    a = randomize(FluxIPAdapter(c), seed=3)
    proc = FluxIPAdapterAttnProcessor(hidden_size=HIDDEN, cross_attention_dim=CTX, num_tokens=(4,), scale=0.7)
    attn = FluxAttention(query_dim=HIDDEN, heads=HEADS, dim_head=HIDDEN // HEADS, added_kv_proj_dim=HIDDEN, bias=True,
                         context_pre_only=False, processor=proc)
    kv = a.ip_layers["0"]
    with torch.no_grad():
        for name in ("to_k_ip", "to_v_ip"):
            getattr(proc, name)[0].weight.copy_(getattr(kv, name).weight)
            getattr(proc, name)[0].bias.copy_(getattr(kv, name).bias)
    img, txt = torch.randn(2, 12, HIDDEN), torch.randn(2, 5, HIDDEN)
    tokens = a.project(torch.randn(2, 768))
    angle = torch.rand(17, HIDDEN // HEADS // 2) * 20
    cos, sin = torch.cos(angle).repeat_interleave(2, -1), torch.sin(angle).repeat_interleave(2, -1)
    with torch.no_grad():
        _, _, ip_out = attn(img, txt, image_rotary_emb=(cos, sin), ip_hidden_states=[tokens])
        q = attn.norm_q(attn.to_q(img).unflatten(-1, (HEADS, -1))).transpose(1, 2)  # pre-RoPE, as the processor
        ours = flux_image_term(q, *a.layer_kv(0, tokens), weight=0.7)
    err = ((ours - ip_out).norm() / ip_out.norm()).item()
    assert err < 1e-5, err


def test_instantx_term_equals_the_reference_math():
    """IPAFluxAttnProcessor2_0 (InstantX): K' = RMSNorm_128(to_k_ip(tokens)) per head, V' = to_v_ip(tokens),
    SDPA(q pre-RoPE, K', V') times scale; written here from reading that processor."""
    torch.manual_seed(0)
    head = 16
    c = make_flux_config("flux-instantx", 1, 2, HIDDEN, CTX, 1152, 8, head_dim=head)
    a = randomize(FluxIPAdapter(c), seed=5)
    tokens = a.project(torch.randn(2, 1152))
    q = torch.randn(2, HEADS, 20, head)
    kv = a.ip_layers["2"]
    k = kv.to_k_ip(tokens).view(2, -1, HEADS, head).transpose(1, 2)
    v = kv.to_v_ip(tokens).view(2, -1, HEADS, head).transpose(1, 2)
    k = k * torch.rsqrt(k.pow(2).mean(-1, keepdim=True) + 1e-5)
    ref = 0.6 * F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 20, HIDDEN)
    ours = flux_image_term(q, *a.layer_kv(2, tokens), weight=0.6)
    err = ((ours - ref).norm() / ref.norm()).item()
    assert err < 1e-5, err
    k2 = rms_heads(torch.randn(3, 7, HIDDEN), head, eps=KEY_NORM_EPS)
    assert torch.allclose(k2.view(3, 7, HEADS, head).pow(2).mean(-1), torch.ones(3, 7, HEADS), atol=1e-3)
    assert math.isclose(float(make_flux_config("flux-instantx", 19, 38).head_dim), 128.0)


def test_siglip_pooling_head_equals_transformers(tmp_path):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    from ip_core.siglip import pooling_head_from_state_dict, read_pooling_head

    cfg = SiglipVisionConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4,
                             image_size=28, patch_size=14, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")
    torch.manual_seed(0)
    model = SiglipVisionModel(cfg).eval()
    sd = {k if k.startswith("vision_model.") else "vision_model." + k: v for k, v in model.state_dict().items()}
    head = pooling_head_from_state_dict(sd, heads=4)
    tokens = torch.randn(3, 4, 64)
    with torch.no_grad():
        ref = (model.head if hasattr(model, "head") else model.vision_model.head)(tokens)  # transformers 5 drops vision_model
        assert torch.allclose(head(tokens), ref, atol=1e-6)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "siglip.safetensors"))
    with pytest.raises(Exception, match="no known SigLIP model has that width"):
        read_pooling_head(tmp_path / "siglip.safetensors")  # heads come from the encoder table: 64 wide is none
    save_file({k: v.contiguous() for k, v in sd.items() if ".head." not in k}, str(tmp_path / "nohead.safetensors"))
    assert read_pooling_head(tmp_path / "nohead.safetensors") is None
