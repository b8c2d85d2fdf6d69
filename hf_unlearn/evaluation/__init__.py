"""Measuring unlearning: per-example scores computed in batches without gradients."""

from .scores import ExampleScores, mean_nll, score_examples

__all__ = ["ExampleScores", "mean_nll", "score_examples"]
