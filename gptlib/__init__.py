"""gptlib: a GPT built from scratch, exported from the chapters of the course book.

Every module except this one is generated from a notebook in notebooks/ (its first lines
say which); edit the notebook and run `make export`, never the module.
"""

__version__ = "0.1.0"
