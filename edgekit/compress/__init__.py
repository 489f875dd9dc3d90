"""Variants of a model: converters per format, technique steps, parity, the artifact cache.

`build.build_variant` is the entry point. This package face imports nothing, so reading a
profile (which validates recipes with `registry`) stays light.
"""
