"""Runnable scripts that train the book's models end to end, e.g. ``python -m dlcourse.examples.train_cnn``.

Each one works as a single process and, unchanged, under ``torchrun --nproc_per_node=N``.
"""
