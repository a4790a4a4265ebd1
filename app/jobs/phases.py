"""Training phases: free text, with the three canonical phases recognised in any spelling."""

import re

CANONICAL_PHASES = ("pre-training", "context-extension", "post-training")
_SPELLINGS = {
    "pretraining": "pre-training",
    "pretrain": "pre-training",
    "contextextension": "context-extension",
    "posttraining": "post-training",
    "posttrain": "post-training",
}


def canonical_phase(phase: str) -> str:
    """`Pretrain`, `pre_training` and `PRE-TRAINING` all become `pre-training`."""
    return _SPELLINGS.get(re.sub(r"[\s_-]+", "", phase.lower()), phase.strip())


def phase_order(phase: str) -> tuple[int, str]:
    """Canonical phases in training order, then the others alphabetically."""
    if phase in CANONICAL_PHASES:
        return (0, str(CANONICAL_PHASES.index(phase)))
    return (2, phase) if phase.startswith("(") else (1, phase)
