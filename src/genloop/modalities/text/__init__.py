"""The text modality: corpora and their train/val split (:mod:`.sources`), tokenizers (:mod:`.tokenizers`), the
token cache (:mod:`.cache`) and the training stream (:mod:`.batches`); :mod:`.modality` ties them to the loop.

    ds = load_text_dataset(TextDataConfig(name="shakespeare.txt", tokenizer="char"))
    batches = TokenBatches(ds.train, batch_size=12, block_size=64, seed=0)
"""

from .batches import TokenBatches
from .cache import TEXT_PREP_VERSION, TextDataset, load_text_dataset
from .modality import TextModality
from .sources import TEXT_SUFFIXES, TextDataConfig, builtin_corpora, read_documents, split_documents
from .tokenizers import EOT, BPETokenizer, CharTokenizer, HFTokenizer, Tokenizer, load_tokenizer, train_tokenizer

__all__ = [
    "EOT",
    "TEXT_PREP_VERSION",
    "TEXT_SUFFIXES",
    "BPETokenizer",
    "CharTokenizer",
    "HFTokenizer",
    "TextDataConfig",
    "TextDataset",
    "TextModality",
    "TokenBatches",
    "Tokenizer",
    "builtin_corpora",
    "load_text_dataset",
    "load_tokenizer",
    "read_documents",
    "split_documents",
    "train_tokenizer",
]
