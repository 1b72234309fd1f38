"""Generation: greedy and beam search written out for teaching (notebook 03), the one batched
generation helper every other notebook uses, and the playground widget.
"""

# What the notebooks import from this room; everything else is imported from its module.
from .batched import generate_texts
from .decoding import (
    apply_sampling_filters,
    as_generate_output,
    beam_search,
    context_length,
    encode_prompt,
    greedy_search,
    next_token_logits,
    sample,
)
from .playground import GenerationPlayground
