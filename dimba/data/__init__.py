"""Training text: the built-in corpus, tokenizers, the data modules. Light to import: the
schemas are plain data; the Lightning data module loads torch when asked for."""

__all__ = ["ByteTokenizer", "DataConfig", "TextDataModule", "builtin_corpus"]


def __getattr__(name: str):
    if name == "TextDataModule":
        from dimba.data.datamodule import TextDataModule

        return TextDataModule
    if name == "ByteTokenizer":
        from dimba.data.tokenizer import ByteTokenizer

        return ByteTokenizer
    if name == "builtin_corpus":
        from dimba.data.corpus import builtin_corpus

        return builtin_corpus
    if name == "DataConfig":
        from dimba.data.schema import DataConfig

        return DataConfig
    raise AttributeError(name)
