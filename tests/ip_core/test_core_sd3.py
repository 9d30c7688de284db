"""The InstantX SD3.5-Large IP-Adapter in ip_core: the file layout (detected from keys and shapes, refused when
damaged), the timestep-conditioned Resampler and each joint block's image term, both against diffusers' own
implementation (IPAdapterTimeImageProjection, SD3IPAdapterJointAttnProcessor2_0) at reduced widths."""
import pytest
import torch
import torch.nn.functional as F

from ip_core.adapter import save_adapter
from ip_core.families import load_adapter
from ip_core.families import detect_config
from ip_core.embeds import build_image_prompt, unconditional_features
from ip_core.errors import AdapterFileError, UnsupportedAdapterError
from ip_core.families.sd3 import SD3IPAdapter, make_sd3_config, renorm_heads, sd3_image_term
from ipa_factories import randomize

HIDDEN, HEADS, TIME, ENC, TOKENS = 128, 2, 128, 48, 8


def _config(blocks=3):
    return make_sd3_config(blocks, HIDDEN, ENC, TOKENS, resampler_dim=TIME, depth=4, heads=2, timestep_in_dim=32)  # diffusers reads depth 4


def _adapter(blocks=3, seed=0):
    return randomize(SD3IPAdapter(_config(blocks)), seed, 0.1).eval()


def test_the_released_layout_is_detected_from_its_shapes():
    with torch.device("meta"):
        sd = SD3IPAdapter(make_sd3_config(38)).released_state_dict()
    assert sorted(k for k in sd["ip_adapter"] if k.startswith("0.")) == [
        "0.norm_ip.linear.bias", "0.norm_ip.linear.weight", "0.norm_ip_k.weight", "0.norm_k.weight", "0.norm_q.weight",
        "0.to_k_ip.weight", "0.to_v_ip.weight"]
    assert {k for k in sd["image_proj"] if not k.startswith("layers.")} == {
        "latents", "proj_in.weight", "proj_in.bias", "proj_out.weight", "proj_out.bias", "norm_out.weight", "norm_out.bias",
        "time_embedding.linear_1.weight", "time_embedding.linear_1.bias", "time_embedding.linear_2.weight", "time_embedding.linear_2.bias"}
    assert tuple(sd["image_proj"]["latents"].shape) == (1, 64, 1280)
    assert tuple(sd["ip_adapter"]["37.norm_ip.linear.weight"].shape) == (4864, 1280)
    c = detect_config(sd)
    assert (c.base_model, c.variant, c.blocks, c.num_tokens, c.hidden_size, c.time_dim, c.head_dim) == \
        ("sd3", "sd35-instantx", 38, 64, 2432, 1280, 64)
    assert (c.resampler.heads, c.resampler.depth, c.resampler.ff_mult, c.timestep_in_dim) == (20, 4, 4, 320)
    assert c.encoder_name == "SigLIP so400m-patch14-384" and c.encoder_output == "penultimate_hidden_states"
    assert c.description == ("SD3.5 InstantX IP-Adapter (timestep-conditioned Resampler), 64 tokens, 38 joint blocks, "
                             "needs SigLIP so400m-patch14-384 penultimate_hidden_states (width 1152)")
    assert [s.comfy_block for s in c.layer_specs()][:2] == [("double_block", 0), ("double_block", 1)]


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_a_file_loads_with_every_weight(tmp_path, suffix):
    a = _adapter()
    path = save_adapter(a, tmp_path / f"ip-adapter{suffix}")
    loaded = load_adapter(path)
    assert isinstance(loaded, SD3IPAdapter) and loaded.config == a.config
    for k, v in a.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_damaged_files_are_refused_naming_the_part():
    sd = _adapter().released_state_dict()
    missing = {**sd, "ip_adapter": {k: v for k, v in sd["ip_adapter"].items() if k != "1.norm_ip_k.weight"}}
    with pytest.raises(UnsupportedAdapterError, match="joint block 1 needs"):
        detect_config(missing)
    extra = {**sd, "ip_adapter": {**sd["ip_adapter"], "0.to_out_ip.weight": torch.zeros(2, 2)}}
    with pytest.raises(UnsupportedAdapterError, match="unexpected key ip_adapter.0.to_out_ip.weight"):
        detect_config(extra)
    gap = {**sd, "ip_adapter": {k: v for k, v in sd["ip_adapter"].items() if not k.startswith("1.")}}
    with pytest.raises(UnsupportedAdapterError, match="numbered 0..N-1"):
        detect_config(gap)
    proj = {**sd, "image_proj": {k: v for k, v in sd["image_proj"].items() if k != "layers.1.2.1.weight"}}
    with pytest.raises(AdapterFileError, match="1 tensors missing"):
        detect_config(proj)


def _diffusers_resampler(adapter):
    from diffusers.loaders.transformer_sd3 import SD3Transformer2DLoadersMixin

    # diffusers' own converter reads InstantX's key names: the adapter's image_proj keys are those
    sd = {k: v.clone() for k, v in adapter.image_proj.state_dict().items()}
    return SD3Transformer2DLoadersMixin._convert_ip_adapter_image_proj_to_diffusers(None, sd, low_cpu_mem_usage=False).eval()


def test_the_time_resampler_equals_diffusers():
    a = _adapter()
    ref = _diffusers_resampler(a)
    g = torch.Generator().manual_seed(1)
    features = torch.randn(3, 20, ENC, generator=g)
    timesteps = torch.tensor([999.0, 500.0, 3.0])
    with torch.no_grad():
        tokens, t_emb = a.step_tokens(features, timesteps)
        r_tokens, r_emb = ref(features, timesteps)
    assert tokens.shape == (3, TOKENS, HIDDEN) and t_emb.shape == (3, TIME)
    assert torch.allclose(t_emb, r_emb, rtol=1e-5, atol=1e-6)
    assert (tokens - r_tokens).norm() / r_tokens.norm() < 1e-5
    assert (tokens[0] - tokens[2]).abs().max() > 1e-3  # the timestep changes the tokens


def _joint_attention(seed=2):
    from diffusers.models.attention_processor import Attention, JointAttnProcessor2_0

    attn = Attention(query_dim=HIDDEN, cross_attention_dim=None, added_kv_proj_dim=HIDDEN, dim_head=64, heads=HEADS,
                     out_dim=HIDDEN, context_pre_only=False, bias=True, processor=JointAttnProcessor2_0(),
                     qk_norm="rms_norm", eps=1e-6)
    return randomize(attn, seed, 0.1).eval()


@pytest.mark.parametrize("host_norm", [True, False])
def test_the_block_image_term_equals_diffusers_processor(host_norm):
    """diffusers' SD3 IP processor minus its plain joint processor is to_out(lambda * term) on the image rows;
    our term is computed from what the host's attention receives: Q and K after the block's own RMSNorm (SD3.5)
    or raw (a model without QK norm)."""
    from diffusers.models.attention_processor import JointAttnProcessor2_0, SD3IPAdapterJointAttnProcessor2_0

    a = _adapter()
    attn = _joint_attention()
    g = torch.Generator().manual_seed(3)
    x, ctx = torch.randn(2, 12, HIDDEN, generator=g), torch.randn(2, 5, HIDDEN, generator=g)
    features, t = torch.randn(2, 20, ENC, generator=g), torch.tensor([700.0, 700.0])
    block = 1
    ip = SD3IPAdapterJointAttnProcessor2_0(hidden_size=HIDDEN, ip_hidden_states_dim=HIDDEN, head_dim=64,
                                          timesteps_emb_dim=TIME, scale=0.6)
    ip.load_state_dict(a.block(block).state_dict())
    with torch.no_grad():
        tokens, t_emb = a.step_tokens(features, t)
        plain = JointAttnProcessor2_0()(attn, x, ctx)[0]
        with_ip = ip(attn, x, ctx, ip_hidden_states=tokens, temb=t_emb)[0]
        raw_q, raw_k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
        if host_norm:
            q_host = attn.norm_q(raw_q.unflatten(-1, (HEADS, 64))).flatten(-2)
            k_host = attn.norm_k(raw_k.unflatten(-1, (HEADS, 64))).flatten(-2)
            qw, kw = attn.norm_q.weight, attn.norm_k.weight
        else:
            q_host, k_host, qw, kw = raw_q, raw_k, None, None
        w = a.block(block)
        q = renorm_heads(q_host, w.norm_q.weight, 64, qw)
        k = renorm_heads(k_host, w.norm_k.weight, 64, kw)
        ip_k, ip_v = a.layer_kv(block, tokens, t_emb)
        term = sd3_image_term(q, k, v, ip_k, ip_v, HEADS, 0.6)
    want = with_ip - plain
    got = F.linear(term, attn.to_out[0].weight)
    assert (got - want).norm() / want.norm() < 1e-5 and want.abs().max() > 1e-3


def test_image_prompt_keeps_features_and_no_image_is_zero_features():
    """The projection needs the timestep: embeds hold the encoder features; "no image" is zeros (diffusers' SD3
    pipeline), not a blank image through the encoder."""
    a = _adapter()
    c = a.config
    features = torch.randn(2, 20, ENC)
    uncond = unconditional_features(c, features)
    assert torch.equal(uncond, torch.zeros_like(features))
    e = build_image_prompt(a, features, uncond, combine="concat")
    assert e.cond.shape == (1, 40, ENC) and torch.equal(e.cond[0, :20], features[0])  # concat: one prompt, both references
    assert e.signature == f"sd3/sd35-instantx/{TOKENS}x{HIDDEN}/penultimate_hidden_states:{ENC}"
    batch = build_image_prompt(a, features, uncond, combine="batch")
    assert batch.cond.shape == (2, 20, ENC)


def test_inspect_describes_the_file(tmp_path, capsys):
    from ip_core.__main__ import main

    path = save_adapter(_adapter(), tmp_path / "renamed.bin")
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert f"SD3.5 InstantX IP-Adapter (timestep-conditioned Resampler), {TOKENS} tokens, 3 joint blocks" in text
    assert "base model:     SD3.5 (context 128, 3 patched blocks)" in text
