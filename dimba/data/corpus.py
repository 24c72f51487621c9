"""The default training text, available offline wherever Python is installed.

CPython ships its reference documentation as plain English prose in
`pydoc_data.topics` (about 460 KB: the language reference and library topics that
`help()` shows). It is real text, identical on every machine with the same Python
minor version, and needs no download.
"""

from __future__ import annotations


def builtin_corpus() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name].strip() for name in sorted(topics)) + "\n"
