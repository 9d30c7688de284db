"""`python -m trainer demo`: an IP-Adapter reproduction in miniature (see run.py)."""


def main(argv=None) -> int:
    # imported on use: `python -m trainer train` and the demo's unit tests need not load the whole demo
    from .run import main as _main

    return _main(argv)
