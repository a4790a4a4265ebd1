"""The names gpucost gives and the names it accepts: one home for each.

- Costs group idle capacity as `IDLE` and jobs without a label (model, phase, team, user) as
  `UNATTRIBUTED`; a job may not take either name.
- Training phases are free text; the three canonical phases are recognised in any spelling.
- Clusters, nodes, budgets, tokens: `NAME_PATTERN`; job ids: `JOB_ID_PATTERN`; GPUs: their
  NVML UUID (`GPU_UUID_PATTERN`; a MIG device's starts `MIG-`).
- Keys of the tags gpucost exports beside a job's labels (FOCUS `Tags`) start with
  `GPUCOST_TAG_PREFIX`; a label key may not.
"""

import re

IDLE = "(idle)"
UNATTRIBUTED = "(unattributed)"

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+-]*$"
_HEX = "[0-9a-fA-F]"
_UUID = rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
GPU_UUID_PATTERN = rf"^(GPU|MIG)-{_UUID}$"
WHOLE_GPU_UUID_PATTERN = rf"^GPU-{_UUID}$"

GPUCOST_TAG_PREFIX = "gpucost/"


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
