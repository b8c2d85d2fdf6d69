"""hf_unlearn: machine unlearning of pre-trained LLMs as drop-in `transformers.Trainer` subclasses.

Grounded in Yao et al., "Machine Unlearning of Pre-trained Large Language Models" (ACL 2024).
"""

__version__ = "0.1.0"

from . import methods
from .callbacks import StoppingCriteria, UnlearningEvalCallback
from .config import UnlearningConfig
from .data import build_qa_dataset, chunk_documents, encode_prompt_completion, load_documents
from .methods import (
    AdversarialConfig,
    AdversarialTrainer,
    GradientAscentConfig,
    GradientAscentDescentConfig,
    GradientAscentDescentTrainer,
    GradientAscentKLConfig,
    GradientAscentKLTrainer,
    GradientAscentTrainer,
    IdkConfig,
    IdkDPOConfig,
    IdkDPOTrainer,
    IdkTrainer,
    NPOConfig,
    NPOTrainer,
    RandomLabelConfig,
    RandomLabelTrainer,
    RMUConfig,
    RMUTrainer,
    SatImpConfig,
    SatImpTrainer,
    SimNPOConfig,
    SimNPOTrainer,
    UndialConfig,
    UndialTrainer,
    UnseenMatchConfig,
    UnseenMatchTrainer,
    WGAConfig,
    WGATrainer,
)
from .objectives import LossTerm, Objective, Pass, register_objective
from .plan import RunPlan, config_for, run_plan
from .registry import get_method, list_methods, register_method
from .streams import StreamDataset, UnlearningCollator
from .trainer import UnlearningTrainer

__all__ = [
    *methods.__all__,  # every method's trainer and config class
    "LossTerm",
    "Objective",
    "RunPlan",
    "StoppingCriteria",
    "StreamDataset",
    "UnlearningCollator",
    "UnlearningConfig",
    "UnlearningEvalCallback",
    "UnlearningTrainer",
    "build_qa_dataset",
    "chunk_documents",
    "config_for",
    "encode_prompt_completion",
    "get_method",
    "list_methods",
    "load_documents",
    "register_method",
    "register_objective",
    "run_plan",
]
