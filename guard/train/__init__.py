"""Compression stages: data, prune, LoRA, fine-tune/distil loops."""
