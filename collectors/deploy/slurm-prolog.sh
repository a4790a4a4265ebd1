#!/bin/sh
# Slurm prolog for gpucost-collector: record which job holds which GPU on this node.
#
# slurm.conf:  Prolog=/etc/slurm/prolog.d/*   (this file as /etc/slurm/prolog.d/50-gpucost)
# Runs as root on the node before the job starts. One file per allocated GPU (by index, or by
# GPU-/MIG- UUID when that is what the scheduler hands out) whose content is the job id. The
# collector charges an allocated GPU to the job even when no process runs on it.
#
# SLURM_JOB_GPUS holds the node's own GPU indices for the whole job, whatever its steps ask:
# an `srun` step sees SLURM_STEP_GPUS and, under ConstrainDevices=yes, a CUDA_VISIBLE_DEVICES
# renumbered from 0, so neither is read here. Run this as Prolog, not as TaskProlog.
set -eu

# The collector's `mapping_dir`. slurmd gives the prolog an environment of its own (a variable
# set for slurmd never reaches it), so the directory is set on this line; install with
#   sed 's|^MAPPING_DIR=.*|MAPPING_DIR=/your/dir|' slurm-prolog.sh > /etc/slurm/prolog.d/50-gpucost
MAPPING_DIR=/run/gpucost/jobs
case "$MAPPING_DIR" in
    /*[!A-Za-z0-9/._-]* | [!/]*)
        echo "gpucost prolog: MAPPING_DIR must be an absolute path of letters, digits and /._-" >&2
        exit 1 ;;
esac

job="${SLURM_JOB_ID:?SLURM_JOB_ID is not set}"
gpus="${SLURM_JOB_GPUS:-}"
[ -n "$gpus" ] || exit 0  # a job without GPUs

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
