"""`python -m trainer demo`: an IP-Adapter reproduction in miniature (see run.py)."""


def main(argv=None) -> int:
    from .run import main as _main

    return _main(argv)
