"""Pure code parser/chunker: files in, chunks (definitions, sections, windows) out.

No database and no network: tree-sitter grammars come from the installed
``tree-sitter-<language>`` wheels.

>>> from mnemo_indexer.chunking import parse_file
>>> parsed = parse_file("pkg/util.py", "def add(a, b):\\n    return a + b\\n")
>>> [(c.kind, c.qualified_name) for c in parsed.chunks]
[('function', 'pkg.util.add')]
"""

from mnemo_core.text import module_path, split_identifier

from .languages import CODE_LANGUAGES, SUPPORTED_LANGUAGES, detect_language
from .model import CHUNK_KINDS, Chunk, ParsedFile, ParseError
from .parse import parse_file

__all__ = [
    "CHUNK_KINDS",
    "CODE_LANGUAGES",
    "SUPPORTED_LANGUAGES",
    "Chunk",
    "ParseError",
    "ParsedFile",
    "detect_language",
    "module_path",
    "parse_file",
    "split_identifier",
]
