"""The design patterns as ready models: many-to-many (:class:`Tagger`), many-to-one
(:class:`Classifier`), time-series regression (:class:`Forecaster`), one-to-many
(:class:`Generator`, :class:`CharLM`) and encoder–decoder with attention (:class:`Seq2Seq`). Each has a
config dataclass and saves to safetensors + JSON; its application (training it, its run
directory) lives next to it in ``<model>_app.py`` (model modules import no trainer)."""

from . import charlm_app  # noqa: F401  (registers the run directory's "charlm" model type)
from .attention import Attention
from .charlm import CharLM, CharLMConfig
from .classifier import Classifier, ClassifierConfig
from .classifier_app import train_classifier
from .forecaster import Forecaster, ForecasterConfig
from .forecaster_app import train_forecaster
from .generator import Generator, GeneratorConfig
from .generator_app import train_generator
from .metrics import classification_scores, span_f1
from .seq2seq import Decoded, SamplingSchedule, Seq2Seq, Seq2SeqConfig, sequence_autoencoder, sequence_loss
from .tagger import Tagger, TaggerConfig
from .tagger_app import train_tagger

__all__ = [
    "Attention",
    "CharLM",
    "CharLMConfig",
    "Classifier",
    "ClassifierConfig",
    "Decoded",
    "Forecaster",
    "ForecasterConfig",
    "Generator",
    "GeneratorConfig",
    "SamplingSchedule",
    "Seq2Seq",
    "Seq2SeqConfig",
    "Tagger",
    "TaggerConfig",
    "classification_scores",
    "sequence_autoencoder",
    "sequence_loss",
    "span_f1",
    "train_classifier",
    "train_forecaster",
    "train_generator",
    "train_tagger",
]
