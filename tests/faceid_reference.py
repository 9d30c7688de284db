"""The official FaceID formulas, written out from a reading of tencent-ailab/IP-Adapter (ip_adapter_faceid.py,
resampler.py, attention_processor_faceid.py) on plain tensors: the reference our modules are tested against,
in tests/ip_core and in the real host (tests/integration)."""
import math

import torch
import torch.nn.functional as F


def ref_mlp(sd, e, tokens, ctx, prefix="proj."):
    h = F.gelu(e @ sd[f"{prefix}0.weight"].T + sd[f"{prefix}0.bias"])
    x = (h @ sd[f"{prefix}2.weight"].T + sd[f"{prefix}2.bias"]).reshape(-1, tokens, ctx)
    return F.layer_norm(x, (ctx,), sd["norm.weight"], sd["norm.bias"])


def ref_perceiver(sd, p, latents, x, heads):
    """resampler.py: latents (queries) attend to [x, latents]; FF with residuals; proj_out; norm_out."""
    ln = lambda t, k: F.layer_norm(t, (t.shape[-1],), sd[f"{k}.weight"], sd[f"{k}.bias"])  # noqa: E731
    x = x @ sd[f"{p}proj_in.weight"].T + sd[f"{p}proj_in.bias"]
    depth = len({k[len(p):].split(".")[1] for k in sd if k.startswith(f"{p}layers.")})
    for i in range(depth):
        a = f"{p}layers.{i}.0"
        xn, ln_ = ln(x, f"{a}.norm1"), ln(latents, f"{a}.norm2")
        q = ln_ @ sd[f"{a}.to_q.weight"].T
        kv = torch.cat([xn, ln_], dim=1) @ sd[f"{a}.to_kv.weight"].T
        k, v = kv.chunk(2, dim=-1)
        b, n, inner = q.shape
        d = inner // heads
        split = lambda t: t.reshape(b, t.shape[1], heads, d).transpose(1, 2)  # noqa: E731
        qh, kh, vh = split(q), split(k), split(v)
        s = 1 / math.sqrt(math.sqrt(d))
        w = torch.softmax((qh * s) @ (kh * s).transpose(-2, -1), dim=-1)
        out = (w @ vh).transpose(1, 2).reshape(b, n, inner) @ sd[f"{a}.to_out.weight"].T
        latents = out + latents
        f = f"{p}layers.{i}.1"
        h = F.gelu(ln(latents, f"{f}.0") @ sd[f"{f}.1.weight"].T) @ sd[f"{f}.3.weight"].T
        latents = h + latents
    latents = latents @ sd[f"{p}proj_out.weight"].T + sd[f"{p}proj_out.bias"]
    return ln(latents, f"{p}norm_out")


def plain_attention(q, k, v, heads):
    b, n, inner = q.shape
    d = inner // heads
    qh, kh, vh = (t.reshape(b, t.shape[1], heads, d).transpose(1, 2) for t in (q, k, v))
    return (torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(d), -1) @ vh).transpose(1, 2).reshape(b, n, inner)


class OfficialLoRAProcessor:
    """attention_processor_faceid.py LoRAAttnProcessor / LoRAIPAttnProcessor: every projection is
    proj(x) + lora_scale * up(down(x)); the cross-attention one adds scale * attention(q, K_ip, V_ip) before to_out."""

    def __init__(self, lora, lora_scale, ip=None, tokens_ref=None, scale=0.0):
        self.lora, self.lora_scale, self.ip, self.tokens_ref, self.scale = lora, lora_scale, ip, tokens_ref, scale

    def _l(self, name, x):
        m = getattr(self.lora, name)
        return self.lora_scale * ((x @ m.down.weight.T) @ m.up.weight.T)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        ctx = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q = attn.to_q(hidden_states) + self._l("to_q_lora", hidden_states)
        k = attn.to_k(ctx) + self._l("to_k_lora", ctx)
        v = attn.to_v(ctx) + self._l("to_v_lora", ctx)
        out = plain_attention(q, k, v, attn.heads)
        if self.ip is not None:
            tokens = self.tokens_ref[0]
            out = out + self.scale * plain_attention(q, tokens @ self.ip.to_k_ip.weight.T, tokens @ self.ip.to_v_ip.weight.T, attn.heads)
        out = attn.to_out[0](out) + self._l("to_out_lora", out)
        return attn.to_out[1](out) / attn.rescale_output_factor
