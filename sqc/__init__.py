"""sqc: an ahead-of-time compiler for extractive question-answering models.

from sqc import compile_model, Engine, Pipeline
"""

__version__ = "0.1.0"

from sqc.api import Engine, Pipeline, QuestionAnsweringOutput, compile_model  # noqa: E402

__all__ = ["Engine", "Pipeline", "QuestionAnsweringOutput", "compile_model", "__version__"]
