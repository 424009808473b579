"""shopllm ingest (not built yet)."""
from shopllm.errors import ShopllmError


def add_arguments(p):
    pass


def run(args, beam_args):
    raise ShopllmError("'ingest' is not built yet")
