"""ltxtrain: training platform for LTX-2 / LTX-2.3 audio-video diffusion models on Ray."""

__version__ = "0.1.0"
