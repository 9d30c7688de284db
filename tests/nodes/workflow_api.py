"""UI-format workflow (what users drag in) -> API-format prompt (what ComfyUI's executor runs).

Mirrors the frontend's graphToPrompt for the widgets used here: widgets_values follow the widget inputs in
INPUT_TYPES order (required, then optional); an INT with control_after_generate (KSampler seed) is followed
by its control value; a node with an image_upload input has the upload widget's value after its required
widgets. Linked inputs become [source node id, output slot].
"""
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # nodes of the frontend alone: graphToPrompt leaves them out

# Widget inputs of the core nodes the examples use (ComfyUI nodes.py, a125cd84), for checks without ComfyUI.
CORE_SCHEMAS = {
    "CheckpointLoaderSimple": {"required": {"ckpt_name": ([],)}},
    "CLIPVisionLoader": {"required": {"clip_name": ([],)}},
    "CLIPTextEncode": {"required": {"text": ("STRING", {"multiline": True}), "clip": ("CLIP",)}},
    "EmptyLatentImage": {"required": {"width": ("INT", {}), "height": ("INT", {}), "batch_size": ("INT", {})}},
    "KSampler": {"required": {"model": ("MODEL",), "seed": ("INT", {"control_after_generate": True}), "steps": ("INT", {}),
                              "cfg": ("FLOAT", {}), "sampler_name": ([],), "scheduler": ([],), "positive": ("CONDITIONING",),
                              "negative": ("CONDITIONING",), "latent_image": ("LATENT",), "denoise": ("FLOAT", {})}},
    "VAEDecode": {"required": {"samples": ("LATENT",), "vae": ("VAE",)}},
    "SaveImage": {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {})}},
    "PreviewImage": {"required": {"images": ("IMAGE",)}},
    "LoadImage": {"required": {"image": ([], {"image_upload": True})}},
    # the frontend's own Note node (a text box, never sent to the server)
    "Note": {"required": {"text": ("STRING", {"multiline": True})}},
    "ImageBatch": {"required": {"image1": ("IMAGE",), "image2": ("IMAGE",)}},
    "LoadImageMask": {"required": {"image": ([], {"image_upload": True}), "channel": (["alpha", "red", "green", "blue"],)}},
    # Flux (nodes.py UNETLoader, DualCLIPLoader, VAELoader; comfy_extras/nodes_flux.py FluxGuidance)
    "UNETLoader": {"required": {"unet_name": ([],), "weight_dtype": (["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"],)}},
    "DualCLIPLoader": {"required": {"clip_name1": ([],), "clip_name2": ([],), "type": (["sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image"],)},
                       "optional": {"device": (["default", "cpu"], {"advanced": True})}},
    "VAELoader": {"required": {"vae_name": ([],)}},
    "FluxGuidance": {"required": {"conditioning": ("CONDITIONING",), "guidance": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 100.0})}},
    # SD3.5 (comfy_extras/nodes_sd3.py TripleCLIPLoader, EmptySD3LatentImage)
    "TripleCLIPLoader": {"required": {"clip_name1": ([],), "clip_name2": ([],), "clip_name3": ([],)}},
    "EmptySD3LatentImage": {"required": {"width": ("INT", {}), "height": ("INT", {}), "batch_size": ("INT", {})}},
}


def is_widget(entry) -> bool:
    t = entry[0]
    if len(entry) > 1 and entry[1].get("forceInput"):
        return False  # a socket only: the frontend stores no widget value for it
    return isinstance(t, (list, tuple)) or t in WIDGET_TYPES or t == "COMBO"


def widget_layout(schema: dict) -> list:
    """Names in widgets_values order; None marks a value the frontend stores but the prompt does not use."""
    out = []
    required = list(schema.get("required", {}).items())
    optional = list(schema.get("optional", {}).items())
    for name, entry in required:
        if is_widget(entry):
            out.append(name)
            opts = entry[1] if len(entry) > 1 else {}
            if opts.get("control_after_generate") or (entry[0] == "INT" and name in ("seed", "noise_seed")):
                out.append(None)
    if any(len(e) > 1 and e[1].get("image_upload") for _, e in required):
        out.append(None)
    for name, entry in optional:
        if is_widget(entry):
            out.append(name)
    return out


def _default(schema: dict, name):
    entry = {**schema.get("required", {}), **schema.get("optional", {})}.get(name)
    if entry is None:
        raise ValueError(f"widget {name!r} is missing and has no schema entry")
    opts = entry[1] if len(entry) > 1 else {}
    if "default" in opts:
        return opts["default"]
    if isinstance(entry[0], (list, tuple)) and entry[0]:
        return entry[0][0]
    if entry[0] == "COMBO" and opts.get("options"):  # a newer host's combo: its choices under "options"
        return opts["options"][0]
    raise ValueError(f"widget {name!r} is missing and has no default")


def ui_to_api(workflow: dict, schema_of) -> dict:
    links = {l[0]: l for l in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) in (2, 4) or node["type"] in FRONTEND_ONLY:  # muted / bypassed, or never sent
            continue
        schema = schema_of(node["type"])
        layout = widget_layout(schema)
        values = list(node.get("widgets_values", []))
        if len(values) < len(layout):  # saved before trailing optional widgets existed: the frontend uses defaults
            values += [_default(schema, name) for name in layout[len(values):]]
        if len(values) != len(layout):
            raise ValueError(f"node {node['id']} ({node['type']}): {len(values)} widget values for widgets {layout}")
        inputs = {name: v for name, v in zip(layout, values) if name is not None}
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                link = links[inp["link"]]
                inputs[inp["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
