"""shopllm: an offline AI shopping guide. The library knows nothing about Beam; see pipelines/ for that."""

__version__ = "0.1.0"
