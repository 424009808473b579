"""shopllm demo (not built yet)."""
from shopllm.errors import ShopllmError


def add_arguments(p):
    pass


def run(args, beam_args):
    raise ShopllmError("'demo' is not built yet")
