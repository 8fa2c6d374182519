#!/usr/bin/env bash
# The main job on a multi-node GPU cluster under SLURM: one process per node, each driving
# all of its node's GPUs, joined by jax.distributed. The repo (and its .venv) must sit on a
# filesystem that every node mounts; the job reads the coordinator (first node of the job),
# the process count and its own rank from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
# JAX_PROCESS_ID, which the generated sbatch script sets from SLURM's variables.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=launch/common.sh
source "$ROOT/launch/common.sh"

usage() {
  cat <<'EOF'
Usage: launch/gpu_slurm.sh [flags] COMMAND... [-- main-job flags]

Commands (run in the order given):
  install   create the venv on the shared filesystem and install the package with CUDA jax
  submit    write the sbatch script (under --log-dir) and submit it
  logs      follow the output of the last submitted job
  cancel    cancel the last submitted job
  all       install, submit, logs

Flags (environment variable in brackets):
  --nodes N            nodes, one process each [GOG_NODES] (default 2)
  --gpus-per-node G    GPUs per node [GOG_GPUS_PER_NODE] (default 8)
  --partition P        SLURM partition [GOG_PARTITION]
  --account A          SLURM account [GOG_ACCOUNT]
  --time T             time limit, e.g. 24:00:00 [GOG_TIME]
  --job-name J         [GOG_JOB_NAME] (default gog-jax)
  --config C           config file[:args] [GOG_CONFIG] (default configs/grpo.py)
  --workdir DIR        job workdir on a shared filesystem or gs://, required by submit [GOG_WORKDIR]
  --port P             coordinator port [GOG_PORT] (default: from the job id, as jax does)
  --venv DIR           virtual environment [GOG_VENV] (default: the repo's .venv)
  --python PY          interpreter for a new venv [GOG_PYTHON] (default python3)
  --jax-extra X        jax extra [GOG_JAX_EXTRA] (default cuda12)
  --log-dir DIR        sbatch scripts and job output [GOG_LOG_DIR] (default: the repo's workdir-slurm/)
  --dry-run            print every command (and the sbatch script) instead of running it
Flags after `--` go to `python -m gog_jax.main`.
EOF
}

NODES=${GOG_NODES:-2}
GPUS_PER_NODE=${GOG_GPUS_PER_NODE:-8}
PARTITION=${GOG_PARTITION:-}
ACCOUNT=${GOG_ACCOUNT:-}
TIME=${GOG_TIME:-}
JOB_NAME=${GOG_JOB_NAME:-gog-jax}
CONFIG=${GOG_CONFIG:-configs/grpo.py}
WORKDIR=${GOG_WORKDIR:-}
PORT=${GOG_PORT:-}
VENV=${GOG_VENV:-$ROOT/.venv}
PYTHON=${GOG_PYTHON:-python3}
JAX_EXTRA=${GOG_JAX_EXTRA:-cuda12}
LOG_DIR=${GOG_LOG_DIR:-$ROOT/workdir-slurm}
parse_flags "nodes gpus-per-node partition account time job-name config workdir port venv python jax-extra log-dir" \
  "" "$@"
((${#ARGS[@]})) || {
  usage >&2
  exit 2
}
[[ $NODES =~ ^[1-9][0-9]*$ && $GPUS_PER_NODE =~ ^[1-9][0-9]*$ ]] || die "--nodes and --gpus-per-node must be positive"
SCRIPT=$LOG_DIR/$JOB_NAME.sbatch
LAST_JOB=$LOG_DIR/last_job

install_venv() {
  run "$PYTHON" -m venv "$VENV"
  run "$VENV/bin/pip" install -q -e "$ROOT" "jax[$JAX_EXTRA]==$(pinned_version "$ROOT/setup.py" jax)"
}

# The sbatch script. SLURM's own variables are expanded on the nodes at run time (escaped here).
sbatch_script() {
  # shellcheck disable=SC2016  # expanded on the first node, not here
  local port='$((SLURM_JOB_ID % 4096 + 61440))'
  [[ -z $PORT ]] || port=$(quote "$PORT")
  cat <<EOF
#!/bin/bash
#SBATCH --job-name=$JOB_NAME
#SBATCH --nodes=$NODES
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=$GPUS_PER_NODE
#SBATCH --output=$LOG_DIR/%x-%j.out
${PARTITION:+#SBATCH --partition=$PARTITION
}${ACCOUNT:+#SBATCH --account=$ACCOUNT
}${TIME:+#SBATCH --time=$TIME
}set -euo pipefail
cd $(quote "$ROOT")
COORDINATOR=\$(scontrol show hostnames "\$SLURM_JOB_NODELIST" | head -n 1)
export JAX_COORDINATOR_ADDRESS="\$COORDINATOR:$port"
export JAX_NUM_PROCESSES="\$SLURM_JOB_NUM_NODES"
# Every GPU of the node to its one process (jax's SLURM detection would give it only GPU \$SLURM_LOCALID).
export JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $((GPUS_PER_NODE - 1)))
# shellcheck disable=SC2016  # SLURM_PROCID is each task's own: expanded in the task
srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c 'JAX_PROCESS_ID=\$SLURM_PROCID exec "\$@"' job \\
  $(quote_all "$VENV/bin/python" -m gog_jax.main "--config=$CONFIG" "--workdir=$WORKDIR" \
    --config.distributed=true "${EXTRA[@]}")
EOF
}

submit_job() {
  [[ -n $WORKDIR ]] || die "--workdir is required (a path every node sees, or gs://)"
  write_file "$SCRIPT" "$(sbatch_script)"
  if ((DRY_RUN)); then
    run sbatch --parsable "$SCRIPT"
  else
    local job_id
    job_id=$(run sbatch --parsable "$SCRIPT")
    echo "${job_id%%;*}" >"$LAST_JOB"
    echo "submitted job ${job_id%%;*}; output: $LOG_DIR/$JOB_NAME-${job_id%%;*}.out" >&2
  fi
}

# The id of the last submitted job (a placeholder in a dry run before any submission).
last_job() {
  if [[ -f $LAST_JOB ]]; then
    cat "$LAST_JOB"
  elif ((DRY_RUN)); then
    echo '<job-id>'
  else
    die "no submitted job recorded in $LAST_JOB"
  fi
}

follow_logs() {
  run tail -n +1 -F "$LOG_DIR/$JOB_NAME-$(last_job).out"
}

for command in "${ARGS[@]}"; do
  case $command in
    install) install_venv ;;
    submit) submit_job ;;
    logs) follow_logs ;;
    cancel) run scancel "$(last_job)" ;;
    all)
      install_venv
      submit_job
      follow_logs
      ;;
    *) die "unknown command '$command' (see --help)" ;;
  esac
done
