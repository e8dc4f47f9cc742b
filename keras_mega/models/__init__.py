"""Mega backbone, tokenizer, preprocessors and task models.

The public names are `__all__`; the `mega_*` submodules are internal.
"""

from keras_mega.keras_hub_compat import register_presets as _register
from keras_mega.models.mega_backbone import MegaBackbone
from keras_mega.models.mega_causal_lm import MegaCausalLM
from keras_mega.models.mega_causal_lm_preprocessor import (
    MegaCausalLMPreprocessor,
)
from keras_mega.models.mega_lm_head import MegaLMHead
from keras_mega.models.mega_masked_lm import MegaMaskedLM
from keras_mega.models.mega_masked_lm_preprocessor import (
    MegaMaskedLMPreprocessor,
)
from keras_mega.models.mega_multiple_choice import MegaMultipleChoice
from keras_mega.models.mega_multiple_choice_preprocessor import (
    MegaMultipleChoicePreprocessor,
)
from keras_mega.models.mega_prefix_state import MegaPrefixState
from keras_mega.models.mega_presets import backbone_presets as _presets
from keras_mega.models.mega_question_answerer import MegaQuestionAnswerer
from keras_mega.models.mega_question_answerer_preprocessor import (
    MegaQuestionAnswererPreprocessor,
)
from keras_mega.models.mega_text_classifier import MegaTextClassifier
from keras_mega.models.mega_text_classifier_preprocessor import (
    MegaTextClassifierPreprocessor,
)
from keras_mega.models.mega_token_classifier import MegaTokenClassifier
from keras_mega.models.mega_token_classifier_preprocessor import (
    MegaTokenClassifierPreprocessor,
)
from keras_mega.models.mega_tokenizer import MegaTokenizer

_register(_presets, MegaBackbone)

__all__ = [
    "MegaBackbone",
    "MegaCausalLM",
    "MegaCausalLMPreprocessor",
    "MegaLMHead",
    "MegaMaskedLM",
    "MegaMaskedLMPreprocessor",
    "MegaMultipleChoice",
    "MegaMultipleChoicePreprocessor",
    "MegaPrefixState",
    "MegaQuestionAnswerer",
    "MegaQuestionAnswererPreprocessor",
    "MegaTextClassifier",
    "MegaTextClassifierPreprocessor",
    "MegaTokenClassifier",
    "MegaTokenClassifierPreprocessor",
    "MegaTokenizer",
]
