"""The widely used pack's (ComfyUI_IPAdapter_plus 9d076a3) node interface: a table of facts. Data only.

One source of truth for the pack's inputs: nodes/migrate_table.py reads its input and output lists from here
(the converter is plain Python: no torch, no host), and nodes/dropin/ serves every id below with exactly this
interface (what /object_info shows: input names, types, choice lists in order, defaults, ranges, optional
inputs, output types and names, display name, category). No tooltip or description text of the pack is kept.

Each id: _node(display name, category, output types, output names, required inputs, optional inputs); an input
is (name, type) or (name, type, options), its type a host type name or a tuple of choices. FILES_IPADAPTER and
FILES_EMBEDS are choice lists read from the disk when the host asks (models/ipadapter; the input folder's
.ipadpt files).
"""
PACK_VERSION = "ComfyUI_IPAdapter_plus 9d076a3"
FILES_IPADAPTER = "@files: models/ipadapter"
FILES_EMBEDS = "@files: input/*.ipadpt"
DYNAMIC = (FILES_IPADAPTER, FILES_EMBEDS)

# choice lists several ids share
WEIGHT_TYPES = ('linear', 'ease in', 'ease out', 'ease in-out', 'reverse in-out', 'weak input', 'weak output',
                'weak middle', 'strong middle', 'style transfer', 'composition', 'strong style transfer',
                'style and composition', 'style transfer precise', 'composition precise')
COMBINE_METHODS = ('concat', 'add', 'subtract', 'average', 'norm average')
EMBEDS_SCALINGS = ('V only', 'K+V', 'K+V w/ C penalty', 'K+mean(V) w/ C penalty')
SIMPLE_WEIGHT_TYPES = ('standard', 'prompt is more important', 'style transfer')
UNIFIED_PRESETS = ('LIGHT - SD1.5 only (low strength)', 'STANDARD (medium strength)', 'VIT-G (medium strength)',
                   'PLUS (high strength)', 'PLUS FACE (portraits)', 'FULL FACE - SD1.5 only (portraits stronger)')
FACEID_PRESETS = ('FACEID', 'FACEID PLUS - SD1.5 only', 'FACEID PLUS V2', 'FACEID PORTRAIT (style transfer)',
                  'FACEID PORTRAIT UNNORM - SDXL only (strong)')
FACEID_PROVIDERS = ('CPU', 'CUDA', 'ROCM', 'DirectML', 'OpenVINO', 'CoreML')
# number inputs several ids share
_START = {'default': 0.0, 'min': 0.0, 'max': 1.0, 'step': 0.001}
_END = {'default': 1.0, 'min': 0.0, 'max': 1.0, 'step': 0.001}
_W3 = {'default': 1.0, 'min': -1, 'max': 3, 'step': 0.05}
_W5 = {'default': 1.0, 'min': -1, 'max': 5, 'step': 0.05}
_BATCH_SIZE = {'default': 0, 'min': 0, 'max': 4096}


def _node(display_name, category, outputs, output_names, required, optional, output_node=False):
    return {"display_name": display_name, "category": category, "outputs": outputs, "output_names": output_names,
            "required": tuple(required), "optional": tuple(optional), "output_node": output_node}


NODES = {
    'IPAdapter': _node('IPAdapter', 'ipadapter', ('MODEL',), ('MODEL',),
                  [('model', 'MODEL'), ('ipadapter', 'IPADAPTER'), ('image', 'IMAGE'), ('weight', 'FLOAT', _W3),
                   ('start_at', 'FLOAT', _START), ('end_at', 'FLOAT', _END), ('weight_type', SIMPLE_WEIGHT_TYPES)],
                  [('attn_mask', 'MASK')]),
    'IPAdapterAdvanced': _node('IPAdapter Advanced', 'ipadapter', ('MODEL',), ('MODEL',),
                  [('model', 'MODEL'), ('ipadapter', 'IPADAPTER'), ('image', 'IMAGE'), ('weight', 'FLOAT', _W5),
                   ('weight_type', WEIGHT_TYPES), ('combine_embeds', COMBINE_METHODS), ('start_at', 'FLOAT', _START),
                   ('end_at', 'FLOAT', _END), ('embeds_scaling', EMBEDS_SCALINGS)],
                  [('image_negative', 'IMAGE'), ('attn_mask', 'MASK'), ('clip_vision', 'CLIP_VISION')]),
    'IPAdapterBatch': _node('IPAdapter Batch (Adv.)', 'ipadapter', ('MODEL',), ('MODEL',),
                  [('model', 'MODEL'), ('ipadapter', 'IPADAPTER'), ('image', 'IMAGE'), ('weight', 'FLOAT', _W5),
                   ('weight_type', WEIGHT_TYPES), ('start_at', 'FLOAT', _START), ('end_at', 'FLOAT', _END),
                   ('embeds_scaling', EMBEDS_SCALINGS), ('encode_batch_size', 'INT', _BATCH_SIZE)],
                  [('image_negative', 'IMAGE'), ('attn_mask', 'MASK'), ('clip_vision', 'CLIP_VISION')]),
    'IPAdapterFaceID': _node('IPAdapter FaceID', 'ipadapter/faceid', ('MODEL', 'IMAGE'), ('MODEL', 'face_image'),
                  [('model', 'MODEL'), ('ipadapter', 'IPADAPTER'), ('image', 'IMAGE'), ('weight', 'FLOAT', _W3),
                   ('weight_faceidv2', 'FLOAT', _W5), ('weight_type', WEIGHT_TYPES),
                   ('combine_embeds', COMBINE_METHODS), ('start_at', 'FLOAT', _START), ('end_at', 'FLOAT', _END),
                   ('embeds_scaling', EMBEDS_SCALINGS)],
                  [('image_negative', 'IMAGE'), ('attn_mask', 'MASK'), ('clip_vision', 'CLIP_VISION'),
                   ('insightface', 'INSIGHTFACE')]),
    'IPAdapterFaceIDKolors': _node('IPAdapter FaceID Kolors', 'ipadapter/faceid', ('MODEL', 'IMAGE'), ('MODEL', 'face_image'),
                  [('model', 'MODEL'), ('ipadapter', 'IPADAPTER'), ('image', 'IMAGE'), ('weight', 'FLOAT', _W3),
                   ('weight_faceidv2', 'FLOAT', _W5), ('weight_kolors', 'FLOAT', _W5), ('weight_type', WEIGHT_TYPES),
                   ('combine_embeds', COMBINE_METHODS), ('start_at', 'FLOAT', _START), ('end_at', 'FLOAT', _END),
                   ('embeds_scaling', EMBEDS_SCALINGS)],
                  [('image_negative', 'IMAGE'), ('attn_mask', 'MASK'), ('clip_vision', 'CLIP_VISION'),
                   ('insightface', 'INSIGHTFACE')]),
    'IPAAdapterFaceIDBatch': _node('IPAdapter FaceID Batch', 'ipadapter/faceid', ('MODEL', 'IMAGE'), ('MODEL', 'face_image'),
                  [('model', 'MODEL'), ('ipadapter', 'IPADAPTER'), ('image', 'IMAGE'), ('weight', 'FLOAT', _W3),
                   ('weight_faceidv2', 'FLOAT', _W5), ('weight_type', WEIGHT_TYPES),
                   ('combine_embeds', COMBINE_METHODS), ('start_at', 'FLOAT', _START), ('end_at', 'FLOAT', _END),
                   ('embeds_scaling', EMBEDS_SCALINGS)],
                  [('image_negative', 'IMAGE'), ('attn_mask', 'MASK'), ('clip_vision', 'CLIP_VISION'),
                   ('insightface', 'INSIGHTFACE')]),
    'IPAdapterTiled': _node('IPAdapter Tiled', 'ipadapter/tiled', ('MODEL', 'IMAGE', 'MASK'), ('MODEL', 'tiles', 'masks'),
                  [('model', 'MODEL'), ('ipadapter', 'IPADAPTER'), ('image', 'IMAGE'), ('weight', 'FLOAT', _W3),
                   ('weight_type', WEIGHT_TYPES), ('combine_embeds', COMBINE_METHODS), ('start_at', 'FLOAT', _START),
                   ('end_at', 'FLOAT', _END),
                   ('sharpening', 'FLOAT', {'default': 0.0, 'min': 0.0, 'max': 1.0, 'step': 0.05}),
                   ('embeds_scaling', EMBEDS_SCALINGS)],
                  [('image_negative', 'IMAGE'), ('attn_mask', 'MASK'), ('clip_vision', 'CLIP_VISION')]),
    'IPAdapterTiledBatch': _node('IPAdapter Tiled Batch', 'ipadapter/tiled', ('MODEL', 'IMAGE', 'MASK'), ('MODEL', 'tiles', 'masks'),
                  [('model', 'MODEL'), ('ipadapter', 'IPADAPTER'), ('image', 'IMAGE'), ('weight', 'FLOAT', _W3),
                   ('weight_type', WEIGHT_TYPES), ('start_at', 'FLOAT', _START), ('end_at', 'FLOAT', _END),
                   ('sharpening', 'FLOAT', {'default': 0.0, 'min': 0.0, 'max': 1.0, 'step': 0.05}),
                   ('embeds_scaling', EMBEDS_SCALINGS), ('encode_batch_size', 'INT', _BATCH_SIZE)],
                  [('image_negative', 'IMAGE'), ('attn_mask', 'MASK'), ('clip_vision', 'CLIP_VISION')]),
    'IPAdapterEmbeds': _node('IPAdapter Embeds', 'ipadapter/embeds', ('MODEL',), ('MODEL',),
                  [('model', 'MODEL'), ('ipadapter', 'IPADAPTER'), ('pos_embed', 'EMBEDS'), ('weight', 'FLOAT', _W3),
                   ('weight_type', WEIGHT_TYPES), ('start_at', 'FLOAT', _START), ('end_at', 'FLOAT', _END),
                   ('embeds_scaling', EMBEDS_SCALINGS)],
                  [('neg_embed', 'EMBEDS'), ('attn_mask', 'MASK'), ('clip_vision', 'CLIP_VISION')]),
    'IPAdapterEmbedsBatch': _node('IPAdapter Embeds Batch', 'ipadapter/embeds', ('MODEL',), ('MODEL',),
                  [('model', 'MODEL'), ('ipadapter', 'IPADAPTER'), ('pos_embed', 'EMBEDS'), ('weight', 'FLOAT', _W3),
                   ('weight_type', WEIGHT_TYPES), ('start_at', 'FLOAT', _START), ('end_at', 'FLOAT', _END),
                   ('embeds_scaling', EMBEDS_SCALINGS)],
                  [('neg_embed', 'EMBEDS'), ('attn_mask', 'MASK'), ('clip_vision', 'CLIP_VISION')]),
    'IPAdapterStyleComposition': _node('IPAdapter Style & Composition SDXL', 'ipadapter/style_composition', ('MODEL',), ('MODEL',),
                  [('model', 'MODEL'), ('ipadapter', 'IPADAPTER'), ('image_style', 'IMAGE'),
                   ('image_composition', 'IMAGE'), ('weight_style', 'FLOAT', _W5),
                   ('weight_composition', 'FLOAT', _W5), ('expand_style', 'BOOLEAN', {'default': False}),
                   ('combine_embeds', COMBINE_METHODS, {'default': 'average'}), ('start_at', 'FLOAT', _START),
                   ('end_at', 'FLOAT', _END), ('embeds_scaling', EMBEDS_SCALINGS)],
                  [('image_negative', 'IMAGE'), ('attn_mask', 'MASK'), ('clip_vision', 'CLIP_VISION')]),
    'IPAdapterStyleCompositionBatch': _node('IPAdapter Style & Composition Batch SDXL', 'ipadapter/style_composition', ('MODEL',), ('MODEL',),
                  [('model', 'MODEL'), ('ipadapter', 'IPADAPTER'), ('image_style', 'IMAGE'),
                   ('image_composition', 'IMAGE'), ('weight_style', 'FLOAT', _W5),
                   ('weight_composition', 'FLOAT', _W5), ('expand_style', 'BOOLEAN', {'default': False}),
                   ('start_at', 'FLOAT', _START), ('end_at', 'FLOAT', _END), ('embeds_scaling', EMBEDS_SCALINGS)],
                  [('image_negative', 'IMAGE'), ('attn_mask', 'MASK'), ('clip_vision', 'CLIP_VISION')]),
    'IPAdapterMS': _node('IPAdapter Mad Scientist', 'ipadapter/dev', ('MODEL',), ('MODEL',),
                  [('model', 'MODEL'), ('ipadapter', 'IPADAPTER'), ('image', 'IMAGE'), ('weight', 'FLOAT', _W5),
                   ('weight_faceidv2', 'FLOAT', _W5), ('weight_type', WEIGHT_TYPES),
                   ('combine_embeds', COMBINE_METHODS), ('start_at', 'FLOAT', _START), ('end_at', 'FLOAT', _END),
                   ('embeds_scaling', EMBEDS_SCALINGS),
                   ('layer_weights', 'STRING', {'default': '', 'multiline': True})],
                  [('image_negative', 'IMAGE'), ('attn_mask', 'MASK'), ('clip_vision', 'CLIP_VISION'),
                   ('insightface', 'INSIGHTFACE')]),
    'IPAdapterClipVisionEnhancer': _node('IPAdapter ClipVision Enhancer', 'ipadapter/dev', ('MODEL',), ('MODEL',),
                  [('model', 'MODEL'), ('ipadapter', 'IPADAPTER'), ('image', 'IMAGE'), ('weight', 'FLOAT', _W5),
                   ('weight_type', WEIGHT_TYPES), ('combine_embeds', COMBINE_METHODS), ('start_at', 'FLOAT', _START),
                   ('end_at', 'FLOAT', _END), ('embeds_scaling', EMBEDS_SCALINGS),
                   ('enhance_tiles', 'INT', {'default': 2, 'min': 1, 'max': 16}),
                   ('enhance_ratio', 'FLOAT', {'default': 1.0, 'min': 0.0, 'max': 1.0, 'step': 0.05})],
                  [('image_negative', 'IMAGE'), ('attn_mask', 'MASK'), ('clip_vision', 'CLIP_VISION')]),
    'IPAdapterClipVisionEnhancerBatch': _node('IPAdapter ClipVision Enhancer Batch', 'ipadapter/dev', ('MODEL',), ('MODEL',),
                  [('model', 'MODEL'), ('ipadapter', 'IPADAPTER'), ('image', 'IMAGE'), ('weight', 'FLOAT', _W5),
                   ('weight_type', WEIGHT_TYPES), ('start_at', 'FLOAT', _START), ('end_at', 'FLOAT', _END),
                   ('embeds_scaling', EMBEDS_SCALINGS),
                   ('enhance_tiles', 'INT', {'default': 2, 'min': 1, 'max': 16}),
                   ('enhance_ratio', 'FLOAT', {'default': 0.5, 'min': 0.0, 'max': 1.0, 'step': 0.05}),
                   ('encode_batch_size', 'INT', _BATCH_SIZE)],
                  [('image_negative', 'IMAGE'), ('attn_mask', 'MASK'), ('clip_vision', 'CLIP_VISION')]),
    'IPAdapterFromParams': _node('IPAdapter from Params', 'ipadapter/params', ('MODEL',), ('MODEL',),
                  [('model', 'MODEL'), ('ipadapter', 'IPADAPTER'), ('ipadapter_params', 'IPADAPTER_PARAMS'),
                   ('combine_embeds', COMBINE_METHODS), ('embeds_scaling', EMBEDS_SCALINGS)],
                  [('image_negative', 'IMAGE'), ('clip_vision', 'CLIP_VISION')]),
    'IPAdapterPreciseStyleTransfer': _node('IPAdapter Precise Style Transfer', 'ipadapter', ('MODEL',), ('MODEL',),
                  [('model', 'MODEL'), ('ipadapter', 'IPADAPTER'), ('image', 'IMAGE'), ('weight', 'FLOAT', _W5),
                   ('style_boost', 'FLOAT', {'default': 1.0, 'min': -5, 'max': 5, 'step': 0.05}),
                   ('combine_embeds', COMBINE_METHODS), ('start_at', 'FLOAT', _START), ('end_at', 'FLOAT', _END),
                   ('embeds_scaling', EMBEDS_SCALINGS)],
                  [('image_negative', 'IMAGE'), ('attn_mask', 'MASK'), ('clip_vision', 'CLIP_VISION')]),
    'IPAdapterPreciseStyleTransferBatch': _node('IPAdapter Precise Style Transfer Batch', 'ipadapter', ('MODEL',), ('MODEL',),
                  [('model', 'MODEL'), ('ipadapter', 'IPADAPTER'), ('image', 'IMAGE'), ('weight', 'FLOAT', _W5),
                   ('style_boost', 'FLOAT', {'default': 1.0, 'min': -5, 'max': 5, 'step': 0.05}),
                   ('combine_embeds', COMBINE_METHODS), ('start_at', 'FLOAT', _START), ('end_at', 'FLOAT', _END),
                   ('embeds_scaling', EMBEDS_SCALINGS)],
                  [('image_negative', 'IMAGE'), ('attn_mask', 'MASK'), ('clip_vision', 'CLIP_VISION')]),
    'IPAdapterPreciseComposition': _node('IPAdapter Precise Composition', 'ipadapter', ('MODEL',), ('MODEL',),
                  [('model', 'MODEL'), ('ipadapter', 'IPADAPTER'), ('image', 'IMAGE'), ('weight', 'FLOAT', _W5),
                   ('composition_boost', 'FLOAT', {'default': 0.0, 'min': -5, 'max': 5, 'step': 0.05}),
                   ('combine_embeds', COMBINE_METHODS), ('start_at', 'FLOAT', _START), ('end_at', 'FLOAT', _END),
                   ('embeds_scaling', EMBEDS_SCALINGS)],
                  [('image_negative', 'IMAGE'), ('attn_mask', 'MASK'), ('clip_vision', 'CLIP_VISION')]),
    'IPAdapterPreciseCompositionBatch': _node('IPAdapter Precise Composition Batch', 'ipadapter', ('MODEL',), ('MODEL',),
                  [('model', 'MODEL'), ('ipadapter', 'IPADAPTER'), ('image', 'IMAGE'), ('weight', 'FLOAT', _W5),
                   ('composition_boost', 'FLOAT', {'default': 0.0, 'min': -5, 'max': 5, 'step': 0.05}),
                   ('combine_embeds', COMBINE_METHODS), ('start_at', 'FLOAT', _START), ('end_at', 'FLOAT', _END),
                   ('embeds_scaling', EMBEDS_SCALINGS)],
                  [('image_negative', 'IMAGE'), ('attn_mask', 'MASK'), ('clip_vision', 'CLIP_VISION')]),
    'IPAdapterUnifiedLoader': _node('IPAdapter Unified Loader', 'ipadapter', ('MODEL', 'IPADAPTER'), ('model', 'ipadapter'),
                  [('model', 'MODEL'), ('preset', UNIFIED_PRESETS)],
                  [('ipadapter', 'IPADAPTER')]),
    'IPAdapterUnifiedLoaderFaceID': _node('IPAdapter Unified Loader FaceID', 'ipadapter/faceid', ('MODEL', 'IPADAPTER'), ('MODEL', 'ipadapter'),
                  [('model', 'MODEL'), ('preset', FACEID_PRESETS),
                   ('lora_strength', 'FLOAT', {'default': 0.6, 'min': 0, 'max': 1, 'step': 0.01}),
                   ('provider', FACEID_PROVIDERS)],
                  [('ipadapter', 'IPADAPTER')]),
    'IPAdapterModelLoader': _node('IPAdapter Model Loader', 'ipadapter/loaders', ('IPADAPTER',), ('IPADAPTER',),
                  [('ipadapter_file', FILES_IPADAPTER)],
                  []),
    'IPAdapterInsightFaceLoader': _node('IPAdapter InsightFace Loader', 'ipadapter/loaders', ('INSIGHTFACE',), ('INSIGHTFACE',),
                  [('provider', ('CPU', 'CUDA', 'ROCM')), ('model_name', ('buffalo_l', 'antelopev2'))],
                  []),
    'IPAdapterUnifiedLoaderCommunity': _node('IPAdapter Unified Loader Community', 'ipadapter/loaders', ('MODEL', 'IPADAPTER'), ('model', 'ipadapter'),
                  [('model', 'MODEL'), ('preset', ('Composition', 'Kolors'))],
                  [('ipadapter', 'IPADAPTER')]),
    'IPAdapterEncoder': _node('IPAdapter Encoder', 'ipadapter/embeds', ('EMBEDS', 'EMBEDS'), ('pos_embed', 'neg_embed'),
                  [('ipadapter', 'IPADAPTER'), ('image', 'IMAGE'),
                   ('weight', 'FLOAT', {'default': 1.0, 'min': -1.0, 'max': 3.0, 'step': 0.01})],
                  [('mask', 'MASK'), ('clip_vision', 'CLIP_VISION')]),
    'IPAdapterCombineEmbeds': _node('IPAdapter Combine Embeds', 'ipadapter/embeds', ('EMBEDS',), ('EMBEDS',),
                  [('embed1', 'EMBEDS'),
                   ('method', ('concat', 'add', 'subtract', 'average', 'norm average', 'max', 'min'))],
                  [('embed2', 'EMBEDS'), ('embed3', 'EMBEDS'), ('embed4', 'EMBEDS'), ('embed5', 'EMBEDS')]),
    'IPAdapterNoise': _node('IPAdapter Noise', 'ipadapter/utils', ('IMAGE',), ('IMAGE',),
                  [('type', ('fade', 'dissolve', 'gaussian', 'shuffle')),
                   ('strength', 'FLOAT', {'default': 1.0, 'min': 0, 'max': 1, 'step': 0.05}),
                   ('blur', 'INT', {'default': 0, 'min': 0, 'max': 32, 'step': 1})],
                  [('image_optional', 'IMAGE')]),
    'PrepImageForClipVision': _node('Prep Image For ClipVision', 'ipadapter/utils', ('IMAGE',), ('IMAGE',),
                  [('image', 'IMAGE'),
                   ('interpolation', ('LANCZOS', 'BICUBIC', 'HAMMING', 'BILINEAR', 'BOX', 'NEAREST')),
                   ('crop_position', ('top', 'bottom', 'left', 'right', 'center', 'pad')),
                   ('sharpening', 'FLOAT', {'default': 0.0, 'min': 0, 'max': 1, 'step': 0.05})],
                  []),
    'IPAdapterSaveEmbeds': _node('IPAdapter Save Embeds', 'ipadapter/embeds', (), (),
                  [('embeds', 'EMBEDS'), ('filename_prefix', 'STRING', {'default': 'IP_embeds'})],
                  [], output_node=True),
    'IPAdapterLoadEmbeds': _node('IPAdapter Load Embeds', 'ipadapter/embeds', ('EMBEDS',), ('EMBEDS',),
                  [('embeds', FILES_EMBEDS)],
                  []),
    'IPAdapterWeights': _node('IPAdapter Weights', 'ipadapter/weights', ('FLOAT', 'FLOAT', 'INT', 'IMAGE', 'IMAGE', 'WEIGHTS_STRATEGY'), ('weights', 'weights_invert', 'total_frames', 'image_1', 'image_2', 'weights_strategy'),
                  [('weights', 'STRING', {'default': '1.0, 0.0', 'multiline': True}),
                   ('timing', ('custom', 'linear', 'ease_in_out', 'ease_in', 'ease_out', 'random'), {'default': 'linear'}),
                   ('frames', 'INT', {'default': 0, 'min': 0, 'max': 9999, 'step': 1}),
                   ('start_frame', 'INT', {'default': 0, 'min': 0, 'max': 9999, 'step': 1}),
                   ('end_frame', 'INT', {'default': 9999, 'min': 0, 'max': 9999, 'step': 1}),
                   ('add_starting_frames', 'INT', {'default': 0, 'min': 0, 'max': 9999, 'step': 1}),
                   ('add_ending_frames', 'INT', {'default': 0, 'min': 0, 'max': 9999, 'step': 1}),
                   ('method', ('full batch', 'shift batches', 'alternate batches'), {'default': 'full batch'})],
                  [('image', 'IMAGE')]),
    'IPAdapterCombineWeights': _node('IPAdapter Combine Weights', 'ipadapter/utils', ('FLOAT', 'INT'), ('weights', 'count'),
                  [('weights_1', 'FLOAT', {'default': 0.0, 'min': 0.0, 'max': 1.0, 'step': 0.05}),
                   ('weights_2', 'FLOAT', {'default': 0.0, 'min': 0.0, 'max': 1.0, 'step': 0.05})],
                  []),
    'IPAdapterWeightsFromStrategy': _node('IPAdapter Weights From Strategy', 'ipadapter/weights', ('FLOAT', 'FLOAT', 'INT', 'IMAGE', 'IMAGE', 'WEIGHTS_STRATEGY'), ('weights', 'weights_invert', 'total_frames', 'image_1', 'image_2', 'weights_strategy'),
                  [('weights_strategy', 'WEIGHTS_STRATEGY')],
                  [('image', 'IMAGE')]),
    'IPAdapterPromptScheduleFromWeightsStrategy': _node('Prompt Schedule From Weights Strategy', 'ipadapter/weights', ('STRING',), ('prompt_schedule',),
                  [('weights_strategy', 'WEIGHTS_STRATEGY'),
                   ('prompt', 'STRING', {'default': '', 'multiline': True})],
                  []),
    'IPAdapterRegionalConditioning': _node('IPAdapter Regional Conditioning', 'ipadapter/params', ('IPADAPTER_PARAMS', 'CONDITIONING', 'CONDITIONING'), ('IPADAPTER_PARAMS', 'POSITIVE', 'NEGATIVE'),
                  [('image', 'IMAGE'), ('image_weight', 'FLOAT', _W3),
                   ('prompt_weight', 'FLOAT', {'default': 1.0, 'min': 0.0, 'max': 10.0, 'step': 0.05}),
                   ('weight_type', WEIGHT_TYPES), ('start_at', 'FLOAT', _START), ('end_at', 'FLOAT', _END)],
                  [('mask', 'MASK'), ('positive', 'CONDITIONING'), ('negative', 'CONDITIONING')]),
    'IPAdapterCombineParams': _node('IPAdapter Combine Params', 'ipadapter/params', ('IPADAPTER_PARAMS',), ('IPADAPTER_PARAMS',),
                  [('params_1', 'IPADAPTER_PARAMS'), ('params_2', 'IPADAPTER_PARAMS')],
                  [('params_3', 'IPADAPTER_PARAMS'), ('params_4', 'IPADAPTER_PARAMS'),
                   ('params_5', 'IPADAPTER_PARAMS')]),
}


def is_choice(kind) -> bool:
    return isinstance(kind, tuple) or kind in DYNAMIC


def signature(node_id: str) -> tuple:
    """(required, optional, outputs) of a pack id, inputs as "name:TYPE" with COMBO for a choice list (the
    converter's format: the order gives the positions of a UI workflow's widget values)."""
    node = NODES[node_id]
    def names(inputs):
        return tuple(f"{i[0]}:{'COMBO' if is_choice(i[1]) else i[1]}" for i in inputs)
    return names(node["required"]), names(node["optional"]), tuple(node["outputs"])
