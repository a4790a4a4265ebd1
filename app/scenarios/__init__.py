"""Price scenarios: named rate cards that price measured usage as if, never the books."""
