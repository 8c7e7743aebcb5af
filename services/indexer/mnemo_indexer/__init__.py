"""The indexer service: parses code with tree-sitter (code-intelligence issue)."""
