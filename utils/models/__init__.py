"""Models: tokenizers, loading (hub or the pocket base), LoRA and merging, shapes and
parameter counts, model folders on disk, the memory calculator and the GPU fit check.
Notebooks 02, 04, 06, 07 and 11.
"""

# What the notebooks import from this room; everything else is imported from its module.
from .fit import setup_check
from .loading import load_model, load_model_and_tokenizer, tiny_config
from .lora import apply_lora, merge_lora, trainable_parameter_line
from .shapes import (
    count_parameters,
    count_parameters_from_config,
    meta_model,
    reference_config,
)
from .tokenizers import gpt2_tokenizer, load_tokenizer
