"""The demo's text side: a word-level tokenizer built in code and a tiny transformers CLIPTextModel.

The tokenizer is called like a transformers tokenizer (trainer.datasets.tokenize works with it), pads with the
end token as CLIP's does, and the text encoder is the same class SD1.5 uses, so the UNet sees
`last_hidden_state` exactly as in SD.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
from transformers import CLIPTextConfig, CLIPTextModel

from .shapes import COLOUR_NAMES, SHAPES

SPECIAL = ("<|startoftext|>", "<|endoftext|>")
WORDS = ("a", "shape") + COLOUR_NAMES + SHAPES


class WordTokenizer:
    """Words of the demo's captions -> ids: [BOS, words..., EOS, EOS padding] of model_max_length."""

    def __init__(self, model_max_length: int = 8):
        self.vocab = {w: i for i, w in enumerate(SPECIAL + WORDS)}
        self.bos_token_id = self.vocab[SPECIAL[0]]
        self.eos_token_id = self.vocab[SPECIAL[1]]
        self.pad_token_id = self.eos_token_id
        self.model_max_length = model_max_length

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        words = text.lower().split()
        unknown = [w for w in words if w not in self.vocab]
        if unknown:
            raise ValueError(f"the demo's tokenizer knows only the words {list(WORDS)}; got {unknown} in {text!r}")
        ids = [self.bos_token_id] + [self.vocab[w] for w in words] + [self.eos_token_id]
        return ids[: self.model_max_length]

    def __call__(self, texts, max_length=None, padding="max_length", truncation=True, return_tensors="pt"):
        texts = [texts] if isinstance(texts, str) else list(texts)
        n = max_length or self.model_max_length
        rows = [(self.encode(t) + [self.pad_token_id] * n)[:n] for t in texts]
        return SimpleNamespace(input_ids=torch.tensor(rows, dtype=torch.long))


def build_text_encoder(tokenizer: WordTokenizer, width: int = 64, layers: int = 2, heads: int = 4):
    return CLIPTextModel(CLIPTextConfig(
        hidden_size=width, intermediate_size=2 * width, num_attention_heads=heads, num_hidden_layers=layers,
        vocab_size=len(tokenizer), max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))


def encode_text(text_encoder, tokenizer, texts) -> torch.Tensor:
    """-> last_hidden_state [N, L, width] (what SD's UNet cross-attends to)."""
    ids = tokenizer(list(texts)).input_ids.to(text_encoder.device)
    return text_encoder(ids)[0]
