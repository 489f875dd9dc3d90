"""Bundled example models: real data shipped inside a wheel, trained on first use, cached."""
