"""Builders of the demo bundle: speech, visemes, the drawn avatar, training data, training, exports, measures."""
