"""Llama Guard 3 Vision: image loading and preprocessing, the mllama tokenizer, eager and ExecuTorch backends."""
