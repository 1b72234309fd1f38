"""Data: reading the two datasets (hub, local files, data/sample), cleaning, formatting,
splitting with leakage and contamination checks, tokenizing with masked labels, batching and
packing; the pocket model's pretraining corpus. Notebooks 01, 02, 04b and 05 teach it.
"""

# What the notebooks import from this room; everything else is imported from its module.
from .collate import (
    SFTCollator,
    batches,
    packing_collator,
    padding_share,
    stage2_collator,
)
from .contamination import normalise_for_matching
from .corpus import corpus_documents, token_stream
from .prepare import (
    clean_poems,
    deduplicate_splits,
    format_conversations,
    leakage_report,
    prepare_data,
    split_conversation,
    train_validation_split,
)
from .sources import SPLITS, load_instructions, load_poems
from .tokenize import encode_example, encode_pairs, filter_by_length, group_texts, lm_blocks, token_lengths
