#!/bin/sh
# Slurm prolog for gpucost-collector: record which job holds which GPU on this node.
#
# slurm.conf:  Prolog=/etc/slurm/prolog.d/*   (this file as /etc/slurm/prolog.d/50-gpucost)
# Runs as root on the node before the job starts. One file per allocated GPU (by index, or by
# GPU-/MIG- UUID when that is what the scheduler hands out) whose content is the job id. The
# collector charges an allocated GPU to the job even when no process runs on it.
set -eu

MAPPING_DIR="${GPUCOST_MAPPING_DIR:-/run/gpucost/jobs}"
job="${SLURM_JOB_ID:?SLURM_JOB_ID is not set}"
# SLURM_JOB_GPUS is what the prolog gets; CUDA_VISIBLE_DEVICES when run from a task prolog.
gpus="${SLURM_JOB_GPUS:-${CUDA_VISIBLE_DEVICES:-}}"
[ -n "$gpus" ] || exit 0

mkdir -p "$MAPPING_DIR"
for gpu in $(printf '%s' "$gpus" | tr ',' ' '); do
    case "$gpu" in
        "" | .* | *[!A-Za-z0-9._-]*) continue ;;  # an index or a UUID, nothing else
    esac
    # Write then rename, so the collector never reads a half-written file.
    tmp="$MAPPING_DIR/.$gpu.$job.tmp"
    printf '%s\n' "$job" > "$tmp"
    mv -f "$tmp" "$MAPPING_DIR/$gpu"
done
exit 0
