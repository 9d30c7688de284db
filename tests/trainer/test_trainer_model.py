"""The model wrapper: official init, frozen UNet, exact text-only path, the official token convention, diffusers parity."""
import torch

from ip_core.adapter import IPAdapter, save_adapter
from ip_core.families import load_adapter
from ip_core.config import make_config
from ip_core.embeds import features_for
from ip_core.layers import layer_specs_from_unet
from trainer.ip_unet import IPAdapterUNet


def _make(tiny_models, variant="base", seed=0):
    unet = tiny_models["load_unet"]()
    enc = tiny_models["encoder"]
    width = enc.projection_dim if variant == "base" else enc.hidden_size
    torch.manual_seed(seed)
    layers = layer_specs_from_unet(unet)
    adapter = IPAdapter.from_config(make_config(variant, layers, unet.config.cross_attention_dim, width), layers)
    return unet, adapter, IPAdapterUNet(unet, adapter)


def _inputs(batch=2, seed=1, width=24):
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(batch, 4, 8, 8, generator=g)
    t = torch.tensor([10, 500][:batch])
    text = torch.randn(batch, 77, 32, generator=g)
    feats = torch.randn(batch, width, generator=g)
    return lat, t, text, feats


def test_init_copies_to_k_to_v_and_freezes_unet(tiny_models):
    unet, adapter, model = _make(tiny_models)
    specs = layer_specs_from_unet(unet)
    assert len(specs) == 4
    for s in specs:
        attn = unet.get_submodule(s.diffusers_name[: -len(".processor")])
        layer = adapter.ip_layers[str(s.key_number)]
        assert torch.equal(layer.to_k_ip.weight, attn.to_k.weight)
        assert torch.equal(layer.to_v_ip.weight, attn.to_v.weight)
        assert layer.to_k_ip.weight.data_ptr() != attn.to_k.weight.data_ptr()  # a copy, not shared storage
    trainable = {id(p) for p in model.trainable_parameters()}
    assert trainable == {id(p) for p in adapter.parameters()}
    assert not any(p.requires_grad for p in unet.parameters())
    # processors are not modules: the adapter's weights never become UNet parameters
    assert sum(p.numel() for p in unet.parameters()) == sum(p.numel() for p in tiny_models["load_unet"]().parameters())


def test_scale_zero_and_no_context_are_the_text_only_unet(tiny_models):
    unet, adapter, model = _make(tiny_models)
    lat, t, text, feats = _inputs()
    plain = tiny_models["load_unet"]()
    with torch.no_grad():
        ref = plain(lat, t, text).sample
        out0 = model(lat, t, text, feats, scale=0.0)
        bare = unet(lat, t, text).sample  # no context set: text only
        out1 = model(lat, t, text, feats, scale=1.0)
    assert torch.equal(out0, ref)
    assert torch.equal(bare, ref)
    assert (out1 - ref).abs().max() > 1e-4  # the image branch does something


def test_official_concatenated_tokens_convention_gives_the_same_prediction(tiny_models):
    """The official training script feeds [text | image tokens] to diffusers' IP processors; ours takes the
    image side from a context. Same weights, same prediction (diffusers' processors do the concatenated form)."""
    unet, adapter, model = _make(tiny_models, seed=5)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    lat, t, text, feats = _inputs()
    dunet = tiny_models["load_unet"]()
    dunet._load_ip_adapter_weights([adapter.released_state_dict()])
    dunet.encoder_hid_proj = None  # the tokens come concatenated to the text, as in tutorial_train.py
    dunet.config.encoder_hid_dim_type = None
    with torch.no_grad():
        ours = model(lat, t, text, feats, scale=1.0)
        tokens = adapter.project(feats)
        theirs = dunet(lat, t, torch.cat([text, tokens], dim=1)).sample
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)


def test_per_sample_scale(tiny_models):
    unet, adapter, model = _make(tiny_models)
    lat, t, text, feats = _inputs()
    with torch.no_grad():
        ctx = model(lat, t, text, feats, scale=1.0)
        per_sample = model(lat, t, text, feats, scale=torch.tensor([1.0, 0.0]))
        ref0 = tiny_models["load_unet"]()(lat, t, text).sample
    torch.testing.assert_close(per_sample[0], ctx[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(per_sample[1], ref0[1], rtol=1e-5, atol=1e-5)


def test_gradients_reach_only_the_adapter(tiny_models):
    unet, adapter, model = _make(tiny_models)
    lat, t, text, feats = _inputs()
    model(lat, t, text, feats).pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.parameters())
    assert all(p.grad is None for p in unet.parameters())


def test_export_roundtrip_ip_core_and_diffusers_same_prediction(tiny_models, tmp_path):
    unet, adapter, model = _make(tiny_models, seed=3)
    with torch.no_grad():  # move the weights away from the to_k/to_v copy so the test sees them
        for p in adapter.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    lat, t, text, _ = _inputs()
    enc = tiny_models["encoder"]
    with torch.no_grad():
        pix = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))
        feats = features_for(adapter.config, enc.encode(pix))
        ours = model(lat, t, text, feats)

    for fmt in ("safetensors", "bin"):
        path = save_adapter(adapter, tmp_path / f"ip_adapter.{fmt}", format=fmt)
        loaded = load_adapter(path)
        assert loaded.config.signature == adapter.config.signature
        for k, v in adapter.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), k

    # diffusers: the released layout through UNet2DConditionModel._load_ip_adapter_weights
    from ip_core.checkpoint import load_adapter_state_dict

    sd = load_adapter_state_dict(tmp_path / "ip_adapter.safetensors")
    dunet = tiny_models["load_unet"]()
    dunet._load_ip_adapter_weights([sd])
    with torch.no_grad():
        theirs = dunet(lat, t, text, added_cond_kwargs={"image_embeds": [feats.unsqueeze(1)]}).sample
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)


def test_export_loads_through_the_diffusers_pipeline_loader(tiny_assets, tiny_models, tmp_path):
    from diffusers import StableDiffusionPipeline

    unet, adapter, model = _make(tiny_models, seed=4)
    save_adapter(adapter, tmp_path / "ip_adapter.safetensors")
    from trainer.frozen_models import load_sd

    m = load_sd(tiny_assets["sd"])
    pipe = StableDiffusionPipeline(
        vae=m.vae, text_encoder=m.text_encoder, tokenizer=m.tokenizer, unet=m.unet, scheduler=m.scheduler,
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    )
    pipe.load_ip_adapter(str(tmp_path), subfolder="", weight_name="ip_adapter.safetensors", image_encoder_folder=None)
    procs = {n: p for n, p in pipe.unet.attn_processors.items() if hasattr(p, "to_k_ip")}
    assert len(procs) == len(adapter.layers)
    for spec in layer_specs_from_unet(unet):
        p = procs[spec.diffusers_name]
        torch.testing.assert_close(p.to_k_ip[0].weight, adapter.ip_layers[str(spec.key_number)].to_k_ip.weight)
        torch.testing.assert_close(p.to_v_ip[0].weight, adapter.ip_layers[str(spec.key_number)].to_v_ip.weight)


def test_sd15_shaped_unet_gets_the_released_layout():
    """On a full SD1.5 UNet (built on the meta device: shapes only) the trainer's adapter is the released one."""
    from diffusers import UNet2DConditionModel

    from ip_core.families import detect_config
    from trainer.train import build_adapter

    with torch.device("meta"):
        unet = UNet2DConditionModel(block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8)
    base = build_adapter(unet, 1024, "base")
    assert base.config.base_model == "sd15" and base.num_parameters() == 22_319_616
    assert [s.key_number for s in base.layers] == list(range(1, 32, 2))
    plus = build_adapter(unet, 1280, "plus")
    r = plus.config.resampler
    assert (plus.config.num_tokens, r.dim, r.heads, r.dim_head, r.depth, r.embedding_dim) == (16, 768, 12, 64, 4, 1280)
    for adapter in (base, plus):
        assert detect_config(adapter.released_state_dict()).signature == adapter.config.signature
