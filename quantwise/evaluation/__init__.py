"""Measurements: format error studies (and later perplexity, sensitivity, throughput)."""
