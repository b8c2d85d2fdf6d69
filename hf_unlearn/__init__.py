"""hf_unlearn: machine unlearning of pre-trained LLMs as drop-in `transformers.Trainer` subclasses.

Grounded in Yao et al., "Machine Unlearning of Pre-trained Large Language Models" (ACL 2024).
"""

__version__ = "0.1.0"

from .callbacks import StoppingCriteria, UnlearningEvalCallback
from .config import UnlearningConfig
from .data import ForgetRetainDataset, UnlearningCollator, build_qa_dataset, chunk_documents, load_documents
from .methods import (
    AdversarialConfig,
    AdversarialTrainer,
    GradientAscentDescentTrainer,
    GradientAscentKLTrainer,
    GradientAscentTrainer,
    RandomLabelConfig,
    RandomLabelTrainer,
)
from .registry import get_method, list_methods, register_method
from .trainer import LossTerm, UnlearningTrainer

__all__ = [
    "AdversarialConfig",
    "AdversarialTrainer",
    "ForgetRetainDataset",
    "GradientAscentDescentTrainer",
    "GradientAscentKLTrainer",
    "GradientAscentTrainer",
    "LossTerm",
    "RandomLabelConfig",
    "RandomLabelTrainer",
    "StoppingCriteria",
    "UnlearningCollator",
    "UnlearningConfig",
    "UnlearningEvalCallback",
    "UnlearningTrainer",
    "build_qa_dataset",
    "chunk_documents",
    "get_method",
    "list_methods",
    "load_documents",
    "register_method",
]
