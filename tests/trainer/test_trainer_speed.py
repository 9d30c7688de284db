"""GPU-readiness switches (trainer/speed.py) on tiny models, on CPU: SDPA in every attention, channels_last,
torch.compile, gradient checkpointing, 8-bit AdamW; each compared with the default step (loss and the adapter's
gradients) where it computes the same function."""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from trainer import speed
from trainer.errors import TrainerConfigError
from trainer.train import Trainer
from trainer.train_config import parse_train_args, validate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None
BNB_ATOL = 1e-5  # 10% of the learning rate


class SDPACounter:
    """Counts calls of torch's scaled_dot_product_attention (every caller looks it up on torch.nn.functional)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        real = F.scaled_dot_product_attention

        def counted(*a, **k):
            self.calls += 1
            return real(*a, **k)

        monkeypatch.setattr(F, "scaled_dot_product_attention", counted)


def first_step(cfg, before=None):
    """Set up a run and train its first batch: (trainer, loss, the adapter's gradients before the optimizer step).
    t.weights_before: the adapter's weights before that step."""
    t = Trainer.setup(validate(cfg))
    t._pbar = tqdm(disable=True)
    grads = {}
    opt_step = t.optimizer.step

    def step_recording(*a, **k):
        grads.update({n: p.grad.detach().clone() for n, p in t.adapter.named_parameters() if p.grad is not None})
        t.weights_before = {n: p.detach().clone() for n, p in t.adapter.named_parameters()}
        return opt_step(*a, **k)

    t.optimizer.step = step_recording
    if before is not None:
        before(t)
    batch = next(iter(t.loader()))
    assert t.train_batch(batch)
    t.log_losses()
    return t, t.result.losses[-1], grads


def assert_same_step(a, b, rtol=1e-5, atol=1e-7):
    (_, loss_a, grads_a), (_, loss_b, grads_b) = a, b
    assert loss_b == pytest.approx(loss_a, rel=rtol)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 0
    for n in grads_a:
        torch.testing.assert_close(grads_b[n], grads_a[n], rtol=rtol, atol=atol, msg=n)


def attention_modules(t):
    """(model name, module) for every attention layer of the frozen models the step can run."""
    from diffusers.models.attention_processor import Attention
    from transformers.models.clip.modeling_clip import CLIPAttention

    from trainer.frozen_models import encoder_module

    parts = {"unet": t.models.unet, "vae": t.models.vae, "text": t.models.text_encoder, "vision": encoder_module(t.models.encoder)}
    return [(name, m) for name, model in parts.items() for m in model.modules() if isinstance(m, (Attention, CLIPAttention))]


def test_every_attention_the_step_runs_is_sdpa(train_args, monkeypatch):
    cfg = train_args(max_train_steps=1)
    t = Trainer.setup(validate(cfg))
    t._pbar = tqdm(disable=True)
    # a model that arrives with the classic processors / eager attention is switched to SDPA by use_sdpa
    from diffusers.models.attention_processor import AttnProcessor

    t.models.vae.set_attn_processor(AttnProcessor())
    t.models.text_encoder.set_attn_implementation("eager")
    speed.use_sdpa(t.models)
    assert t.models.text_encoder.config._attn_implementation == "sdpa"

    counter = SDPACounter(monkeypatch)
    per_module = {}

    def before(m, *_):
        per_module.setdefault(id(m), []).append(counter.calls)

    def after(m, *_):
        per_module[id(m)][-1] = counter.calls - per_module[id(m)][-1]

    modules = attention_modules(t)
    for _, m in modules:
        m.register_forward_pre_hook(before)
        m.register_forward_hook(after)
    assert t.train_batch(next(iter(t.loader())))
    ran = {name for name, m in modules if id(m) in per_module}
    assert ran == {"unet", "vae", "text", "vision"}  # no cache: the VAE and both encoders run in the step
    silent = [(name, type(m).__name__) for name, m in modules if id(m) in per_module and min(per_module[id(m)]) < 1]
    assert not silent, f"attention without scaled_dot_product_attention: {silent}"
    # UNet: self-attention once, decoupled cross-attention twice (text + image), per layer
    unet = [m for name, m in modules if name == "unet"]
    n_cross = sum(1 for m in unet if m.is_cross_attention)
    assert sum(per_module[id(m)][0] for m in unet) == (len(unet) - n_cross) + 2 * n_cross


def test_openclip_tower_attention_is_sdpa(train_args, tmp_path, monkeypatch):
    import json

    from safetensors.torch import save_file

    from ip_core.encoders import build_openclip_visual

    arch = {"embed_dim": 24, "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "head_width": 8, "patch_size": 32}}
    (tmp_path / "tiny_openclip.json").write_text(json.dumps(arch))
    torch.manual_seed(0)
    visual = build_openclip_visual(arch).eval().requires_grad_(False)
    save_file({"visual." + k: v.contiguous() for k, v in visual.state_dict().items()}, str(tmp_path / "open_clip_model.safetensors"))
    t = Trainer.setup(validate(train_args(image_encoder_path=str(tmp_path / "open_clip_model.safetensors"),
                                          image_encoder_arch=str(tmp_path / "tiny_openclip.json"), output_dir=str(tmp_path / "o"))))
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        fast = visual(pixels)  # torch's fused fast path (no SDPA on CPU)
        counter = SDPACounter(monkeypatch)
        mha = [m for m in t.models.encoder.module.modules() if isinstance(m, torch.nn.MultiheadAttention)]
        out = t.models.encoder.encode(pixels)
    assert len(mha) == 2 and counter.calls == 2  # one SDPA call per layer
    torch.testing.assert_close(out.image_embeds, fast, rtol=1e-5, atol=1e-6)
    assert torch.backends.mha.get_fastpath_enabled()  # switched off only inside those calls


def test_channels_last_same_step(train_args, tmp_path):
    ref = first_step(train_args(output_dir=str(tmp_path / "ref")))
    cl = first_step(train_args(output_dir=str(tmp_path / "cl"), channels_last=True))
    for model in (cl[0].models.unet, cl[0].models.vae):
        convs = [p for p in model.parameters() if p.dim() == 4 and p.shape[-1] > 1]
        assert convs and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in convs)
    assert all(p.is_contiguous() for p in ref[0].models.unet.parameters())
    assert_same_step(ref, cl)


def test_gradient_checkpointing_same_adapter_gradients(train_args, tmp_path, monkeypatch):
    counter = SDPACounter(monkeypatch)
    count_step_only = lambda t: setattr(counter, "calls", 0)  # noqa: E731  (setup's encoder calls are not counted)
    ref = first_step(train_args(output_dir=str(tmp_path / "ref"), cache_dir=str(tmp_path / "cache")), before=count_step_only)
    plain_calls = counter.calls
    gc = first_step(train_args(output_dir=str(tmp_path / "gc"), cache_dir=str(tmp_path / "cache"), gradient_checkpointing=True),
                    before=count_step_only)
    assert gc[0].models.unet.is_gradient_checkpointing
    assert counter.calls > plain_calls > 0  # the backward recomputed the attention (the checkpointing is real)
    assert_same_step(ref, gc)


def test_torch_compile_same_step(train_args, tmp_path):
    # aot_eager traces the UNet with dynamo and differentiates it with AOTAutograd (the parts that decide whether
    # the adapter's K'/V', read from the processors' context, get gradients); inductor's code generation on top is
    # torch's own: this same test with backend "inductor" passes too but compiles for ~80 s on 2 CPU cores.
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    ref = first_step(train_args(output_dir=str(tmp_path / "ref"), cache_dir=str(tmp_path / "cache")))
    comp = first_step(train_args(output_dir=str(tmp_path / "c"), cache_dir=str(tmp_path / "cache"), torch_compile=True,
                                 torch_compile_backend="aot_eager"))
    try:
        assert comp[0].models.unet._compiled_call_impl is not None
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # dynamo really traced the UNet
        assert_same_step(ref, comp, rtol=1e-5, atol=1e-6)
    finally:
        torch._dynamo.reset()


def test_speed_flags_from_the_command_line_and_checks(train_args):
    cfg = parse_train_args(["--channels_last", "--torch_compile", "--torch_compile_backend", "aot_eager",
                            "--torch_compile_mode", "default", "--gradient_checkpointing"])
    assert (cfg.channels_last, cfg.torch_compile, cfg.torch_compile_backend, cfg.torch_compile_mode) == (True, True, "aot_eager", "default")
    assert cfg.use_8bit_adam is False
    with pytest.raises(TrainerConfigError, match="--torch_compile_backend: 'nosuch'.*inductor"):
        validate(train_args(torch_compile=True, torch_compile_backend="nosuch"))
    with pytest.raises(TrainerConfigError, match="--torch_compile_mode: 'fastest'"):
        validate(train_args(torch_compile=True, torch_compile_mode="fastest"))
    with pytest.raises(TrainerConfigError, match="--torch_compile_mode needs --torch_compile"):
        validate(train_args(torch_compile_mode="default"))


def test_8bit_adam_without_bitsandbytes_fails_before_loading(train_args, monkeypatch):
    from trainer.train import train

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes -> ImportError
    loaded = []
    monkeypatch.setattr("trainer.train.load_sd", lambda *a, **k: loaded.append(a))
    with pytest.raises(TrainerConfigError, match=r"--use_8bit_adam.*`pip install bitsandbytes`"):
        train(train_args(use_8bit_adam=True))
    assert speed.optimizer_class(False) is torch.optim.AdamW
    assert not loaded


def test_resume_needs_the_same_optimizer(train_args):
    cfg = validate(train_args())
    speed.check_resume({}, cfg, "ck")  # a checkpoint from before the flag: fp32 AdamW, fits
    with pytest.raises(TrainerConfigError, match="without --use_8bit_adam.*--no-use_8bit_adam"):
        speed.check_resume({"use_8bit_adam": False}, type(cfg)(**{**cfg.to_dict(), "use_8bit_adam": True}), "ck")
    with pytest.raises(TrainerConfigError, match="with --use_8bit_adam"):
        speed.check_resume({"use_8bit_adam": True}, cfg, "ck")


@pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes not installed (pip install bitsandbytes); the error path is tested above")
def test_8bit_adam_trains_with_bitsandbytes(train_args, tmp_path):
    import bitsandbytes as bnb

    ref = first_step(train_args(output_dir=str(tmp_path / "ref"), cache_dir=str(tmp_path / "cache")))

    def all_8bit(t):  # bitsandbytes keeps tensors under 4096 elements (all of the tiny adapter's) in 32 bit
        t.optimizer.optimizer.args.min_8bit_size = 1

    eight = first_step(train_args(output_dir=str(tmp_path / "8"), cache_dir=str(tmp_path / "cache"), use_8bit_adam=True), before=all_8bit)
    inner = eight[0].optimizer.optimizer  # accelerate's wrapper holds the real one
    assert isinstance(inner, bnb.optim.AdamW8bit)
    assert_same_step(ref, eight)  # same loss and gradients; only the update differs
    params = dict(eight[0].adapter.named_parameters())
    assert all(inner.state[p]["state1"].dtype == torch.uint8 for p in params.values())
    # the update: 8-bit moments are blockwise-quantised, so the weights move as fp32 AdamW's do, to quantisation error
    ref_after = dict(ref[0].adapter.named_parameters())
    for n, p in params.items():
        want = ref_after[n].detach() - ref[0].weights_before[n]
        got = p.detach() - eight[0].weights_before[n]
        assert want.abs().max() > 5e-5  # lr 1e-4: the first AdamW step moves every weight by about lr
        torch.testing.assert_close(got, want, rtol=0, atol=BNB_ATOL, msg=n)


def test_bench_trainer_runs_tiny():
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_trainer.py"), "--preset", "tiny", "--steps", "1", "--warmup", "0",
         "--repeats", "1", "--batch", "2"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    for want in ("baseline", "ours", "samples/s", "ratio ours/baseline", "1,000,000 steps", "200,000 steps", "from the CPU rate"):
        assert want in text, (want, text)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where no GPU is visible")
def test_bench_trainer_cuda_without_a_gpu_fails_clearly():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_trainer.py"), "--device", "cuda"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2 and "no CUDA GPU is visible" in out.stderr and "--device cpu" in out.stderr


@pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes not installed (pip install bitsandbytes)")
def test_8bit_adam_resume_reproduces_the_uninterrupted_run(train_args, tmp_path):
    from trainer.train import train

    kw = dict(use_8bit_adam=True, cache_dir=str(tmp_path / "cache"))
    full = train(train_args(output_dir=str(tmp_path / "full"), max_train_steps=3, **kw))
    out = str(tmp_path / "o")
    train(train_args(output_dir=out, max_train_steps=2, save_steps=2, **kw))
    resumed = train(train_args(output_dir=out, max_train_steps=3, resume_from_checkpoint="latest", **kw))
    assert resumed.losses == full.losses  # the 8-bit optimizer state went through the checkpoint intact
