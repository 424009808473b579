"""shopllm sample (not built yet)."""
from shopllm.errors import ShopllmError


def add_arguments(p):
    pass


def run(args, beam_args):
    raise ShopllmError("'sample' is not built yet")
