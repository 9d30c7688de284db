"""Host-agnostic IP-Adapter core: files, variants, models, decoupled attention, image prompts.

Pure torch (plus safetensors; open_clip / transformers only for the encoder backends). Never imports
ComfyUI: the nodes and the trainer both build on this package.
"""
from .adapter import IPAdapter, save_adapter
from .attention import decoupled_attention, multihead_attention
from .checkpoint import load_adapter_state_dict, save_adapter_state_dict
from .config import AdapterConfig, ResamplerConfig, make_config
from .errors import AdapterFileError, AdapterMismatchError, IPAdapterError, UnsupportedAdapterError
from .embeds import ImagePromptEmbeds, build_image_prompt, features_for, unconditional_features
from .families import detect_config, family_for, load_adapter
from .encoders import (
    EncoderOutput, ImageEncoder, OpenCLIPEncoder, TransformersCLIPEncoder, load_image_encoder, openclip_to_transformers,
    transformers_to_openclip,
)
from .layers import LayerSpec, layer_specs, layer_specs_from_unet
from .preprocess import preprocess_images

__all__ = [
    "AdapterConfig", "AdapterFileError", "AdapterMismatchError", "IPAdapter", "IPAdapterError", "LayerSpec",
    "ResamplerConfig", "UnsupportedAdapterError", "decoupled_attention", "detect_config", "family_for", "layer_specs",
    "layer_specs_from_unet", "load_adapter", "load_adapter_state_dict", "make_config", "multihead_attention",
    "save_adapter", "save_adapter_state_dict", "ImagePromptEmbeds", "build_image_prompt", "features_for",
    "unconditional_features", "EncoderOutput", "ImageEncoder", "OpenCLIPEncoder", "TransformersCLIPEncoder",
    "load_image_encoder", "openclip_to_transformers", "transformers_to_openclip", "preprocess_images",
]
