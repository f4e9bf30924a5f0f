"""Evaluation metrics and calibration."""
