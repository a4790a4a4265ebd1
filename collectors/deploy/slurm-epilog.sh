#!/bin/sh
# Slurm epilog for gpucost-collector: release this job's GPUs in the mapping directory, and
# send the token count the job left, if it left one.
#
# slurm.conf:  Epilog=/etc/slurm/epilog.d/*   (this file as /etc/slurm/epilog.d/50-gpucost)
# Removes only the files that still name this job, so a job that already took a GPU over
# (or a late epilog) never loses its mapping. Never fails the epilog: it would drain the node.
set -u

# Set at install as in slurm-prolog.sh (slurmd passes no environment), with sed:
#   sed -e 's|^MAPPING_DIR=.*|MAPPING_DIR=/your/dir|' … slurm-epilog.sh > /etc/slurm/epilog.d/50-gpucost
# MAPPING_DIR: the collector's `mapping_dir`.
# TOKENS_DIR: where a job leaves its token count, in a file named by its job id (a directory
#   of mode 1777 the admin creates, see docs/slurm.md); empty sends no counts.
# COLLECTOR, COLLECTOR_CONFIG: the collector's command and its configuration (the service,
#   token and cluster that `gpucost-collector job-tokens` sends the count with).
# SEND_SECONDS: the longest sending a count may take; past it the count is logged, not sent.
MAPPING_DIR=/run/gpucost/jobs
TOKENS_DIR=/var/spool/gpucost/tokens
COLLECTOR=/opt/gpucost/bin/gpucost-collector
COLLECTOR_CONFIG=/etc/gpucost/collector.toml
SEND_SECONDS=15

log() {
    echo "gpucost epilog: $*" >&2
    logger -t gpucost-epilog -- "$*" 2>/dev/null || :
}

plain_path() {  # an absolute path of letters, digits and /._- (the prolog's rule)
    case "$1" in
        /*[!A-Za-z0-9/._-]* | [!/]* | "") return 1 ;;
    esac
}

job="${SLURM_JOB_ID:-}"
case "$job" in
    "" | .* | *[!A-Za-z0-9._-]*) exit 0 ;;  # no job, or not a name for a file
esac

release_gpus() {
    plain_path "$MAPPING_DIR" || return 0  # the prolog says so, and fails
    [ -d "$MAPPING_DIR" ] || return 0
    for file in "$MAPPING_DIR"/*; do
        [ -f "$file" ] || continue
        if [ "$(cat "$file" 2>/dev/null)" = "$job" ]; then
            rm -f "$file"
        fi
    done
}

# The job's count, from a file the job wrote in a directory every user may write to: only a
# plain file of the job's own user (or root) is read, at most 32 bytes and 2 seconds of it
# (a FIFO put in its place would block), and it must be digits. It is removed either way.
send_tokens() {
    [ -n "$TOKENS_DIR" ] || return 0
    if ! plain_path "$TOKENS_DIR" || ! plain_path "$COLLECTOR" || ! plain_path "$COLLECTOR_CONFIG"
    then
        log "TOKENS_DIR, COLLECTOR and COLLECTOR_CONFIG must be absolute paths of letters, digits and /._-"
        return 0
    fi
    file="$TOKENS_DIR/$job"
    [ -e "$file" ] || [ -L "$file" ] || return 0
    if [ -L "$file" ] || [ ! -f "$file" ]; then
        rm -f -- "$file" 2>/dev/null
        log "job $job: $file is not a plain file: not sent"
        return 0
    fi
    owner=$(stat -c %u -- "$file" 2>/dev/null)
    count=$(timeout 2 head -c 32 -- "$file" 2>/dev/null | tr -d '\r\n')
    rm -f -- "$file"
    if [ "$owner" != "${SLURM_JOB_UID:-}" ] && [ "$owner" != 0 ]; then
        log "job $job: $file belongs to uid $owner, not to the job's user: not sent"
        return 0
    fi
    case "$count" in
        "" | *[!0-9]*)
            log "job $job: $file does not hold a whole number of tokens: not sent"
            return 0 ;;
    esac
    if [ ! -x "$COLLECTOR" ]; then
        log "job $job: $COLLECTOR is not executable: $count tokens not sent"
        return 0
    fi
    case "$SEND_SECONDS" in "" | *[!0-9]*) SEND_SECONDS=15 ;; esac
    said=$(timeout -k 2 "$((SEND_SECONDS + 5))" "$COLLECTOR" job-tokens \
        --config "$COLLECTOR_CONFIG" --job "$job" --tokens "$count" \
        --give-up-after "${SEND_SECONDS}s" 2>&1)
    status=$?
    said=$(printf '%s\n' "$said" | tail -n 1)
    if [ "$status" -eq 0 ]; then
        log "$said"
    else
        [ "$status" -lt 124 ] || said="no answer within $SEND_SECONDS s"
        log "job $job: $count tokens not sent (${said#gpucost-collector: error: }); send them" \
            "with: gpucost-collector job-tokens --job $job --tokens $count"
    fi
}

release_gpus
send_tokens
exit 0
