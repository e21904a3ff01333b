"""sqc: an ahead-of-time compiler for extractive question-answering models."""

__version__ = "0.1.0"
