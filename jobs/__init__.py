"""Entry points: the `shopllm` command line, the torchrun trainer and the nightly job."""
