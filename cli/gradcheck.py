"""Placeholder; replaced by the gradcheck CLI."""


def run():
    print("gradcheck")
