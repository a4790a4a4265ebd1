#!/bin/sh
# Slurm epilog for gpucost-collector: release this job's GPUs in the mapping directory.
#
# slurm.conf:  Epilog=/etc/slurm/epilog.d/*   (this file as /etc/slurm/epilog.d/50-gpucost)
# Removes only the files that still name this job, so a job that already took a GPU over
# (or a late epilog) never loses its mapping. Never fails the epilog: it would drain the node.
set -u

# The collector's `mapping_dir`, set as in slurm-prolog.sh (slurmd passes no environment):
#   sed 's|^MAPPING_DIR=.*|MAPPING_DIR=/your/dir|' slurm-epilog.sh > /etc/slurm/epilog.d/50-gpucost
MAPPING_DIR=/run/gpucost/jobs
case "$MAPPING_DIR" in
    /*[!A-Za-z0-9/._-]* | [!/]*) exit 0 ;;  # the prolog says so, and fails
esac

job="${SLURM_JOB_ID:-}"
[ -n "$job" ] && [ -d "$MAPPING_DIR" ] || exit 0

for file in "$MAPPING_DIR"/*; do
    [ -f "$file" ] || continue
    if [ "$(cat "$file" 2>/dev/null)" = "$job" ]; then
        rm -f "$file"
    fi
done
exit 0
