"""Scoring and comparing models: the metrics, LPIPS, the comparison harness and its report."""
