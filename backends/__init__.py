"""Inference backends behind one small interface (see backends/base.py). Never imports Qt."""
