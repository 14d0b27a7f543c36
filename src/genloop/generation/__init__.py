"""Inference: pipelines that turn a trained run into content, and the files they write."""
