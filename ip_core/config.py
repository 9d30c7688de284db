"""What an adapter is: its config (variant, base model, tokens, encoder needs, layers) and the factory of new
configs. Reading a config from a file's keys and shapes is each family's detection (ip_core.families)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from .encoder_table import FACE_EMBEDDING, FACE_ENCODER, IMAGE_EMBEDS, PENULTIMATE, encoder_name_for
from .layers import BASE_MODEL_NAMES, CONTEXT_DIMS, LayerSpec, custom_layer_specs, layer_specs

VARIANTS = ("base", "plus", "full-face")
# FaceID: the prompt is a 512-d InsightFace (ArcFace) face embedding. Plus/PlusV2 share one file layout (PlusV2
# only adds a shortcut at inference); portrait files have 16 tokens and no LoRA; "unnorm" takes the raw
# (not L2-normalised) embedding through a Resampler.
FACEID_VARIANTS = ("faceid", "faceid-plus", "faceid-portrait", "faceid-portrait-unnorm")
PROJECTIONS = {"base": "linear", "plus": "resampler", "full-face": "mlp", "faceid": "faceid-mlp",
               "faceid-plus": "faceid-plus", "faceid-portrait": "faceid-mlp", "faceid-portrait-unnorm": "resampler"}
ENCODER_OUTPUTS = {"base": IMAGE_EMBEDS, "plus": PENULTIMATE, "full-face": PENULTIMATE,
                   **{v: FACE_EMBEDDING for v in FACEID_VARIANTS}}
FACE_EMBEDDING_WIDTH = FACE_ENCODER[1]
_KINDS = {
    "base": "base (linear projection)", "plus": "plus (Resampler)", "full-face": "full-face (MLP)",
    "faceid": "FaceID (face embedding MLP)", "faceid-plus": "FaceID Plus/PlusV2 (face embedding + CLIP Resampler)",
    "faceid-portrait": "FaceID portrait (face embedding MLP)",
    "faceid-portrait-unnorm": "FaceID portrait unnorm (raw face embedding Resampler)",
}

# Kwai Kolors: an SDXL-shaped UNet (2048-wide context) whose IP-Adapter-Plus has a 2048-wide Resampler over CLIP
# ViT-L/14-336 hidden states (the widely used pack's rule: SDXL and the Resampler's to_out 2048 rows).
KOLORS_NAME = "Kolors"
KOLORS_ENCODER = "ViT-L/14-336"
KOLORS_RESAMPLER_DIM = 2048
# Kolors FaceID-Plus makes 4096-wide tokens (ChatGLM's width, the widely used pack's rule: the perceiver
# resampler's to_out has 4096 rows); the Kolors UNet's own encoder_hid_proj (Linear 4096 -> 2048, the one that
# maps the text) turns them into context before to_k_ip / to_v_ip (see ip_core/kolors.py).
KOLORS_FACE_TOKEN_DIM = 4096

# A ViT/14 at 224 px has 16 x 16 patches + CLS: the full-face projection keeps all of them.
FULL_FACE_TOKENS = 257
DEFAULT_TOKENS = {"base": 4, "plus": 16, "full-face": FULL_FACE_TOKENS}


@dataclass(frozen=True)
class ResamplerConfig:
    dim: int
    depth: int
    dim_head: int
    heads: int
    num_queries: int
    embedding_dim: int
    output_dim: int
    ff_mult: int = 4


@dataclass(frozen=True)
class AdapterConfig:
    variant: str
    projection: str
    base_model: str
    context_dim: int
    num_layers: int
    num_tokens: int
    encoder_output: str
    encoder_width: int
    encoder_name: str
    resampler: Optional[ResamplerConfig] = None
    layer_key_numbers: tuple = field(default=(), repr=False)
    layer_hidden_sizes: tuple = field(default=(), repr=False)
    lora_rank: int = 0  # FaceID: rank of the per-layer LoRA on to_q/k/v/out (0: the file has none)
    clip_width: int = 0  # FaceID Plus: width of the CLIP penultimate hidden states it also takes
    kolors: bool = False  # Kwai Kolors (SDXL-shaped UNet, CLIP ViT-L/14 at 336 px): see detect_config
    # Kolors FaceID-Plus: width of the projection's tokens (4096), which the model's encoder_hid_proj maps to
    # context_dim; 0: the tokens are context_dim wide (every other adapter)
    token_dim: int = 0

    @property
    def projection_dim(self) -> int:
        """Width of the image prompt tokens the projection makes (embeds carry these)."""
        return self.token_dim or self.context_dim

    @property
    def prompt_tokens(self) -> tuple:
        """(tokens per reference, width) of the image prompt embeds this adapter makes and takes; a family whose
        embeds stay encoder features until sampling (SD3.5) says (0: any count, the features' width)."""
        return self.num_tokens, self.projection_dim

    @property
    def is_faceid(self) -> bool:
        return self.variant in FACEID_VARIANTS

    @property
    def face_embedding_normalized(self) -> bool:
        """FaceID files take the L2-normalised embedding (insightface normed_embedding), "unnorm" the raw one."""
        return self.variant != "faceid-portrait-unnorm"

    @property
    def zero_features_uncond(self) -> bool:
        """"No image" is zero encoder features before the projection (base adapters, as the official code; SD3.5,
        as diffusers' pipeline) instead of a blank image through the encoder."""
        return self.encoder_output == IMAGE_EMBEDS

    @property
    def clip_requirement(self) -> str:
        """FaceID Plus only: the CLIP output it takes besides the face embedding."""
        if not self.clip_width:
            return ""
        name = KOLORS_ENCODER if self.kolors else encoder_name_for(PENULTIMATE, self.clip_width)
        return f"{name if name != 'unknown' else 'CLIP vision'} penultimate_hidden_states (width {self.clip_width})"

    def layer_specs(self) -> tuple[LayerSpec, ...]:
        if self.base_model in ("sd15", "sdxl"):
            return layer_specs(self.base_model)
        return custom_layer_specs(self.layer_key_numbers, self.layer_hidden_sizes)

    @property
    def base_model_name(self) -> str:
        return KOLORS_NAME if self.kolors else BASE_MODEL_NAMES.get(self.base_model, self.base_model)

    @property
    def encoder_requirement(self) -> str:
        """What the adapter needs from the image encoder, in words."""
        if self.is_faceid:
            kind = "L2-normalised" if self.face_embedding_normalized else "raw, not normalised"
            face = f"an InsightFace face embedding ({self.encoder_width}-d, {kind})"
            return f"{face} and {self.clip_requirement}" if self.clip_width else face
        if self.encoder_name == "unknown":
            return f"{self.encoder_output} of width {self.encoder_width} (not a released CLIP encoder's width)"
        return f"{self.encoder_name} {self.encoder_output} (width {self.encoder_width})"

    @property
    def signature(self) -> str:
        """Identifies which adapters can share image prompt embeddings (same tokens in, same layout)."""
        clip = f"+clip:{self.clip_width}" if self.clip_width else ""
        kolors = "@kolors" if self.kolors else ""  # same widths as an SDXL ViT-L/14 plus, other encoder (336 px)
        return f"{self.base_model}/{self.variant}/{self.num_tokens}x{self.projection_dim}/{self.encoder_output}:{self.encoder_width}{clip}{kolors}"

    @property
    def description(self) -> str:
        lora = f", LoRA rank {self.lora_rank}" if self.lora_rank else ""
        hid = (f"; its {self.token_dim}-wide tokens pass the model's encoder_hid_proj ({self.token_dim} -> "
               f"{self.context_dim})" if self.token_dim else "")
        return (
            f"{self.base_model_name} {_KINDS[self.variant]}, {self.num_tokens} tokens, {self.num_layers} layers{lora}, "
            f"needs {self.encoder_requirement}{hid}"
        )


def make_config(
    variant: str,
    layers: Sequence[LayerSpec],
    context_dim: int,
    encoder_width: int,
    num_tokens: Optional[int] = None,
    resampler: Optional[ResamplerConfig] = None,
    lora_rank: int = 0,
    clip_width: int = 0,
    token_dim: int = 0,
) -> AdapterConfig:
    """A config for a new adapter (the trainer's starting point, test fixtures), for released or custom UNets.

    FaceID variants: encoder_width is the face embedding width (512); `lora_rank` for faceid / faceid-plus
    (released: 128); `clip_width` for faceid-plus (ViT-H: 1280). `token_dim`: faceid-plus only, the Kolors layout
    (released: 4096, no LoRA): tokens of that width, mapped to context_dim by the model's encoder_hid_proj."""
    if variant not in VARIANTS + FACEID_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS + FACEID_VARIANTS}")
    layers = tuple(layers)
    base_model = base_model_for(context_dim, [(s.key_number, s.hidden_size) for s in layers])
    if variant in ("plus", "faceid-portrait-unnorm"):
        if resampler is None:
            n = DEFAULT_TOKENS["plus"] if num_tokens is None else num_tokens
            dim = context_dim if context_dim <= 1280 else 1280
            resampler = ResamplerConfig(
                dim=dim, depth=4, dim_head=64 if dim >= 64 else dim, heads=max(1, dim // 64),
                num_queries=n, embedding_dim=encoder_width, output_dim=context_dim,
            )
        num_tokens = resampler.num_queries
    elif variant == "faceid-plus":
        num_tokens = 4 if num_tokens is None else num_tokens
        width = token_dim or context_dim
        if resampler is None:
            dim_head = 64 if width >= 64 else width
            resampler = ResamplerConfig(dim=width, depth=4, dim_head=dim_head, heads=width // dim_head,
                                        num_queries=num_tokens, embedding_dim=clip_width, output_dim=width)
    elif variant == "full-face":
        num_tokens = DEFAULT_TOKENS["full-face"] if num_tokens is None else num_tokens
    else:  # base, faceid, faceid-portrait
        num_tokens = (16 if variant == "faceid-portrait" else 4) if num_tokens is None else num_tokens
    if token_dim and variant != "faceid-plus":
        raise ValueError(f"token_dim is the Kolors FaceID-Plus layout's; {variant} adapters make context_dim-wide tokens")
    if variant in ("faceid", "faceid-plus") and not lora_rank and not token_dim:
        raise ValueError(f"{variant} adapters carry a LoRA: give lora_rank (released files: 128)")
    if variant == "faceid-plus" and not clip_width:
        raise ValueError("faceid-plus needs clip_width (the CLIP hidden width, 1280 for ViT-H)")
    return config_from_layout(variant, base_model, context_dim, num_tokens, encoder_width, resampler,
                              [s.key_number for s in layers], [s.hidden_size for s in layers], lora_rank, clip_width,
                              kolors=bool(token_dim), token_dim=token_dim)


def config_from_layout(variant, base_model, context_dim, num_tokens, encoder_width, resampler, key_numbers, hidden_sizes,
                       lora_rank=0, clip_width=0, kolors=False, token_dim=0) -> AdapterConfig:
    """The config of an SD-UNet adapter (SD1.5, SDXL, Kolors, custom UNets) from the facts of its layout."""
    out = ENCODER_OUTPUTS[variant]
    return AdapterConfig(
        kolors=bool(kolors),
        token_dim=int(token_dim),
        variant=variant,
        projection=PROJECTIONS[variant],
        base_model=base_model,
        context_dim=int(context_dim),
        num_layers=len(key_numbers),
        num_tokens=int(num_tokens),
        encoder_output=out,
        encoder_width=int(encoder_width),
        encoder_name=KOLORS_ENCODER if kolors and out == PENULTIMATE else encoder_name_for(out, encoder_width),
        resampler=resampler,
        layer_key_numbers=tuple(int(n) for n in key_numbers),
        layer_hidden_sizes=tuple(int(h) for h in hidden_sizes),
        lora_rank=int(lora_rank),
        clip_width=int(clip_width),
    )


def base_model_for(context_dim: int, layers: list) -> str:
    """"sd15" / "sdxl" when the context width and (key number, width) of every layer are that UNet's, else "custom"."""
    for name in ("sd15", "sdxl"):
        known = [(s.key_number, s.hidden_size) for s in layer_specs(name)]
        if context_dim == CONTEXT_DIMS[name] and layers == known:
            return name
    return "custom"
