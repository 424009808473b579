"""shopllm score (not built yet)."""
from shopllm.errors import ShopllmError


def add_arguments(p):
    pass


def run(args, beam_args):
    raise ShopllmError("'score' is not built yet")
