from dimba.data.corpus import builtin_corpus
from dimba.data.datamodule import TextDataModule
from dimba.data.tokenizer import ByteTokenizer

__all__ = ["ByteTokenizer", "TextDataModule", "builtin_corpus"]
