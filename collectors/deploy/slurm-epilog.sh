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
# SEND_SECONDS: the longest sending a count may take (0 to 999); past it the count is logged,
#   not sent. The whole epilog takes at most SEND_SECONDS + 9 s: the collector is stopped 5 s
#   after it (killed 2 s later), reading the count and each log line take at most 1 s.
MAPPING_DIR=/run/gpucost/jobs
TOKENS_DIR=/var/spool/gpucost/tokens
COLLECTOR=/opt/gpucost/bin/gpucost-collector
COLLECTOR_CONFIG=/etc/gpucost/collector.toml
SEND_SECONDS=15

log() {  # one line of printable characters, to stderr and syslog (at most 1 s of it)
    line=$(printf '%s' "$*" | LC_ALL=C tr -d '\000-\037\177')
    printf 'gpucost epilog: %s\n' "$line" >&2  # dash's echo would expand a \n in it
    timeout 1 logger -t gpucost-epilog -- "$line" 2>/dev/null || :
}

plain_path() {  # an absolute path of letters, digits and /._- (the prolog's rule)
    case "$1" in
        /*[!A-Za-z0-9/._-]* | [!/]* | "") return 1 ;;
    esac
}

job="${SLURM_JOB_ID:-}"
[ -n "$job" ] || exit 0

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

# The job's count, from a file the job wrote in a directory every user may write to. The
# job's user can replace that file at any moment (by a link to a file of root's, a FIFO, a
# directory), so it is first moved, as it is, into a directory of root's that nobody else
# may change (rename(2): no link is followed), and only then looked at: a plain file of the
# job's own user with one link, at most 32 bytes of it, that must be digits. What was moved is
# removed (a directory is left there, and said so), and the count sent.
send_tokens() {
    [ -n "$TOKENS_DIR" ] || return 0
    case "$job" in
        .* | *[!A-Za-z0-9._-]*) return 0 ;;  # not a name for a file
    esac
    if ! plain_path "$TOKENS_DIR" || ! plain_path "$COLLECTOR" || ! plain_path "$COLLECTOR_CONFIG"
    then
        log "TOKENS_DIR, COLLECTOR and COLLECTOR_CONFIG must be absolute paths of letters, digits and /._-"
        return 0
    fi
    file="$TOKENS_DIR/$job"
    [ -e "$file" ] || [ -L "$file" ] || return 0
    if ! aside=$(mktemp -d "$TOKENS_DIR/.gpucost-epilog.XXXXXX" 2>/dev/null); then
        log "job $job: cannot make a directory in $TOKENS_DIR: $file not sent"
        return 0
    fi
    if ! mv -f -- "$file" "$aside/count" 2>/dev/null; then
        rmdir -- "$aside" 2>/dev/null
        log "job $job: cannot move $file aside: not sent"
        return 0
    fi
    taken="$aside/count"
    if [ -L "$taken" ] || [ ! -f "$taken" ]; then
        if rm -f -- "$taken" 2>/dev/null && rmdir -- "$aside" 2>/dev/null; then
            log "job $job: $file is not a plain file: not sent"
        else
            log "job $job: $file is not a plain file: not sent, left in $aside"
        fi
        return 0
    fi
    owner_links=$(stat -c '%u %h' -- "$taken" 2>/dev/null)
    count=$(timeout 1 head -c 32 -- "$taken" 2>/dev/null | tr -d '\r\n')
    rm -f -- "$taken"
    rmdir -- "$aside" 2>/dev/null
    owner=${owner_links% *}
    if [ "$owner" != "${SLURM_JOB_UID:-}" ]; then
        log "job $job: $file belongs to uid $owner, not to the job's user: not sent"
        return 0
    fi
    if [ "$owner_links" != "$owner 1" ]; then
        log "job $job: $file has ${owner_links#* } links (one to another file?): not sent"
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
    case "$SEND_SECONDS" in "" | *[!0-9]* | ????*) SEND_SECONDS=15 ;; esac
    said=$(timeout -k 2 "$((SEND_SECONDS + 5))" "$COLLECTOR" job-tokens \
        --config "$COLLECTOR_CONFIG" --job "$job" --tokens "$count" \
        --give-up-after "${SEND_SECONDS}s" 2>&1)
    status=$?
    said=$(printf '%s\n' "$said" | tail -n 1)
    if [ "$status" -eq 0 ]; then
        log "$said"
    else
        # 124: `timeout` stopped it; 137: killed 2 s later (126, 127: it could not be run)
        case "$status" in 124 | 137) said="no answer within $SEND_SECONDS s" ;; esac
        log "job $job: $count tokens not sent (${said#gpucost-collector: error: }); send them" \
            "with: gpucost-collector job-tokens --job $job --tokens $count"
    fi
}

release_gpus
send_tokens
exit 0
