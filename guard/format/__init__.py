"""The Llama Guard 3 format: tokenizer, S1-S14 categories and policies, prompt rendering, verdict parsing."""
