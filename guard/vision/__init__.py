"""Llama Guard 3 Vision on the text path: image loading and preprocessing, the mllama tokenizer, the export model
(text decoder of guard.model.llama plus cross-attention), its .pte runner (a PteRunner with one more method and two
more inputs) and eager runner. guard.runtime.load picks them for an mllama directory or a vision .pte."""
