"""Export a Llama Guard 3 Vision (mllama) directory to one ExecuTorch .pte with three methods sharing buffers:

- ``vision_encoder(pixel_values[1,1,tiles,3,S,S], aspect_ratio_ids[1,1], aspect_ratio_mask[1,1,tiles])`` runs the
  vision encoder + projector and writes every cross-attention layer's keys/values into the shared buffers;
- ``prefill(tokens[1,chunk], pos[chunk], last[1], xrow[chunk], xon[1])`` and ``decode(...)`` with ``T = 1``: the
  text decoder with its self-attention KV cache (as guard.export) and the cross-attention blocks reading the image.

Metadata is stored as constant methods, as in guard.export.metadata, with the format ``guard-vision-pte-1``.
Optional INT4 (8da4w) quantizes the text decoder only; the vision encoder stays fp32.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from guard.errors import GuardError
from guard.export import ExportConfig
from guard.export.metadata import VISION_FORMAT


class _ImageMethod(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, pixel_values, aspect_ratio_ids, aspect_ratio_mask):
        return self.m.encode_image(pixel_values, aspect_ratio_ids, aspect_ratio_mask)


class _TextMethod(nn.Module):
    """prefill/decode wrap the model like vision_encoder, so the three methods name the shared buffers alike."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, tokens, pos, last, xrow, xon):
        return self.m(tokens, pos, last, xrow, xon)


def quantize_vision(model, group_size: int = 32) -> None:
    """8da4w on the vision encoder's linears and the projector (the patch conv and embeddings stay fp32)."""
    from guard.quantize import QuantConfig, load_quantized_ops, quantize

    load_quantized_ops()
    vision = nn.Module()
    vision.encoder, vision.projector = model.vision_model, model.multi_modal_projector
    quantize(vision, QuantConfig("8da4w", group_size=group_size, embedding_bits=0))
    model.vision_quant = "8da4w"  # recorded in the .pte as get_vision_quant_scheme


def quantize_text(model, config: ExportConfig, tok) -> None:
    """Prune the output layer and quantize the text decoder (layers, embedding, head) in place; vision stays fp32."""
    from guard.export import prepare

    text = nn.Module()
    text.layers, text.embed_tokens, text.lm_head = model.layers, model.embed_tokens, model.lm_head
    prepare(model, config, tok, text)
    model.embed_tokens, model.lm_head = text.embed_tokens, text.lm_head


def export_vision_model(model_dir: str | Path, out_dir: str | Path, config: ExportConfig, report: dict | None = None,
                        vision_quant: bool = False) -> Path:
    """mllama HF dir -> out_dir/model.pte + tokenizer.json + preprocessor_config.json. Returns the .pte path.
    ``vision_quant``: also 8da4w the vision encoder's linears (group ``config.quant.group_size``)."""
    from guard.export import export_dir
    from guard.export.metadata import file_digest
    from guard.vision.model import load_hf_vision
    from guard.vision.tokenizer import image_id

    def write(tok, path):
        image_id(tok)
        model = load_hf_vision(model_dir, max_seq_len=config.max_seq_len, chunk=config.chunk)
        if vision_quant:
            quantize_vision(model, config.quant.group_size)
        # tokenizer.json is already beside ``path`` (export_dir copies it first): the .pte records its digest
        return export_vision_pte(model, config, path, tok, report, file_digest(Path(path).parent / "tokenizer.json"))

    return export_dir(model_dir, out_dir, config, write, ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"))


def export_vision_pte(model, config: ExportConfig, path: str | Path, tok, report: dict | None = None,
                      tokenizer_sha256: str | None = None) -> Path:
    from guard.export import lower, metadata
    from guard.format.prompt import FORMAT_VERSION
    from guard.vision.tokenizer import image_id

    a, v = model.args, model.vargs
    if (a.max_seq_len, a.chunk) != (config.max_seq_len, config.chunk):
        raise GuardError(f"model built for max_seq_len={a.max_seq_len}, chunk={a.chunk}; config says {config.max_seq_len}, {config.chunk}")
    quantize_text(model, config, tok)
    model.eval()
    C, T, S = config.chunk, v.max_tiles, v.image_size
    ar_mask = torch.zeros(1, 1, T, dtype=torch.long)
    ar_mask[..., 0] = 1
    methods = {
        "vision_encoder": (_ImageMethod(model), (torch.zeros(1, 1, T, 3, S, S), torch.ones(1, 1, dtype=torch.long), ar_mask)),
        "prefill": (_TextMethod(model), (torch.zeros(1, C, dtype=torch.long), torch.arange(C), torch.tensor([C - 1]), torch.zeros(C), torch.ones(1))),
        "decode": (_TextMethod(model), (torch.zeros(1, 1, dtype=torch.long), torch.tensor([0]), torch.tensor([0]), torch.zeros(1), torch.ones(1))),
    }
    meta = metadata.build(tok.tokens, max_seq_len=config.max_seq_len, chunk=C, vocab_size=a.vocab_size,
                          output_ids=model.output_ids, prompt_format=FORMAT_VERSION,
                          quant_scheme=config.quant.scheme, group_size=config.quant.linear_group,
                          tokenizer_sha256=tokenizer_sha256)
    meta.update({metadata.MARKER: VISION_FORMAT, "get_tile_size": S, "get_max_tiles": T, "get_image_token_id": image_id(tok),
                 "get_vision_tokens": T * v.n_patches, "get_cross_layers": list(model.cross_layers),
                 "get_vision_quant_scheme": getattr(model, "vision_quant", "none")})
    return lower(methods, meta, path, report)
