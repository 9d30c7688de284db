"""The one table of CLIP vision encoders: every name, width and output the package uses comes from it."""
import torch

from ip_core import config, embeds, encoders
from ip_core.encoder_table import (ENCODERS, FACE_EMBEDDING, FACE_ENCODER, IMAGE_EMBEDS, PENULTIMATE, EncoderOutput,
                                   encoder_file_for, encoder_name_for)


def test_names_widths_and_outputs_come_from_the_table():
    for e in ENCODERS:
        # an encoder with the widths of an earlier one (ViT-L/14-336) is named by an adapter's layout, never by widths
        by_widths = next(x for x in ENCODERS if (x.dims.width, x.dims.output_dim) == (e.dims.width, e.dims.output_dim))
        assert (e.name, by_widths.name) in {(e.name, e.name), ("ViT-L/14-336", "ViT-L/14")}
        assert encoder_name_for(IMAGE_EMBEDS, e.dims.output_dim) == by_widths.name
        assert encoder_name_for(PENULTIMATE, e.dims.width) == by_widths.name
        assert encoders.encoder_name_for_dims(e.dims.width, e.dims.output_dim) == by_widths.name
        if e.openclip_arch:
            assert encoders.KNOWN_ARCHS[e.openclip_arch] is e.dims
    assert set(encoders.KNOWN_ARCHS) == {"ViT-H-14", "ViT-bigG-14"}
    assert encoder_name_for(IMAGE_EMBEDS, 24) == "unknown"
    assert set(config.ENCODER_OUTPUTS.values()) == {IMAGE_EMBEDS, PENULTIMATE, FACE_EMBEDDING}
    assert encoder_name_for(FACE_EMBEDDING, FACE_ENCODER[1]) == FACE_ENCODER[0]  # FaceID: the face encoder
    assert encoder_name_for(FACE_EMBEDDING, 1024) == "unknown"
    assert encoders.EncoderOutput is EncoderOutput  # one output type for every backend (and the nodes' host)


def test_adapter_descriptions_and_remedies_use_the_table():
    c = config.make_config("plus", config.layer_specs("sd15"), 768, 1664)
    assert c.encoder_name == "ViT-bigG/14"
    out = EncoderOutput(image_embeds=torch.zeros(1, 1024), penultimate_hidden_states=torch.zeros(1, 257, 1280))
    try:
        embeds.features_for(c, out)
    except Exception as e:
        assert "ViT-H/14" in str(e) and encoder_file_for("ViT-bigG/14") in str(e)
    else:
        raise AssertionError("a ViT-H output was accepted by a bigG adapter")


def test_hidden_state_tokens_come_from_the_table():
    from ip_core.encoder_table import encoder_spec, hidden_tokens

    # CLIP: patches + CLS; SigLIP (no class token): patches only, 27 x 27 at 384 px
    assert [hidden_tokens(encoder_spec(n).dims) for n in ("ViT-H/14", "ViT-L/14-336", "SigLIP so400m-patch14-384")] == [257, 577, 729]
