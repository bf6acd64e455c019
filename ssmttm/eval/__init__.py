"""Evaluation: prompt sets and reference audio, metric models (embedders), metric math, scores."""
