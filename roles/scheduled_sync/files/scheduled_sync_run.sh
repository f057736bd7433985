#!/bin/bash
# Installed by the role scheduled_sync; the service's ExecStart. Runs COMMAND with its output going
# both to the journal (this script's standard output) and appended to LOG_FILE, framed by the run's
# start and end, and exits with COMMAND's own exit status, so that `systemctl status` shows it.
#   <prefix>-run LOG_FILE COMMAND [ARGUMENT...]
set -uo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 LOG_FILE COMMAND [ARGUMENT...]" >&2
  exit 2
fi
log_file=$1
shift
run="run ${INVOCATION_ID:-outside systemd}"
stamp() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# systemctl stop, or TimeoutStartSec= reached: systemd sends SIGTERM to every process of the run.
trap 'printf "=== %s %s killed by SIGTERM (TimeoutStartSec= reached, or systemctl stop)\n" "$(stamp)" "$run" >> "$log_file"; exit 143' TERM

printf '=== %s %s started\n' "$(stamp)" "$run" >> "$log_file"
"$@" 2>&1 | tee -a "$log_file"
status=${PIPESTATUS[0]}
printf '=== %s %s ended with exit status %s\n' "$(stamp)" "$run" "$status" >> "$log_file"
exit "$status"
