"""Placeholder until the ExecuTorch vision runner lands."""


def is_vision_pte(path) -> bool:
    return False
