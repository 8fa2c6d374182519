#!/usr/bin/env bash
# The main job on a Cloud TPU VM slice: create the slice, copy and install the repo on every
# worker, start the job on every host at once (each runs the same SPMD program;
# jax.distributed.initialize() finds its peers from the TPU metadata), stream the logs, stop
# the job, delete the slice. The workdir lives on GCS (worker disks go with the slice), mounted
# with gcsfuse at the same path on every worker, so the hosts share one file system: process 0
# writes the shared files and every host reads them.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=launch/common.sh
source "$ROOT/launch/common.sh"

usage() {
  cat <<'EOF'
Usage: launch/tpu_pod.sh [flags] COMMAND... [-- main-job flags]

Commands (run in the order given):
  create    create the TPU VM slice
  install   copy this checkout (tracked + untracked, not ignored files) to every worker, install it
            (and gcsfuse, if the image lacks it)
  run       mount the workdir's bucket at ~/gcs on every worker, start the main job there
            (detached; output in ~/gog_jax.log)
  logs      stream one worker's log until its job exits
  stop      stop the job on every worker
  delete    delete the slice
  all       create, install, run, logs, then delete (unless --keep)

Flags (environment variable in brackets):
  --project P        GCP project [GOG_PROJECT] (default: gcloud's configured project)
  --zone Z           zone, required [GOG_ZONE], e.g. us-west4-a
  --accelerator A    accelerator type [GOG_ACCELERATOR] (default v5litepod-16)
  --runtime R        TPU runtime version [GOG_RUNTIME] (default v2-alpha-tpuv5-lite)
  --name N           slice name [GOG_NAME] (default gog-jax)
  --config C         config file[:args] [GOG_CONFIG] (default configs/grpo.py)
  --workdir gs://..  job workdir on GCS, required by run [GOG_WORKDIR]
  --python PY        interpreter for the venv [GOG_PYTHON] (default python3.11; apt-installed if absent)
  --jax-extra X      jax extra for the accelerator [GOG_JAX_EXTRA] (default tpu)
  --log-worker W     worker whose log `logs` streams (default 0)
  --spot             create a Spot slice
  --keep             `all` keeps the slice after the job
  --dry-run          print every command instead of running it
Flags after `--` go to `python -m gog_jax.main` (e.g. -- --config.grpo.steps=100).
EOF
}

PROJECT=${GOG_PROJECT:-}
ZONE=${GOG_ZONE:-}
ACCELERATOR=${GOG_ACCELERATOR:-v5litepod-16}
RUNTIME=${GOG_RUNTIME:-v2-alpha-tpuv5-lite}
NAME=${GOG_NAME:-gog-jax}
CONFIG=${GOG_CONFIG:-configs/grpo.py}
WORKDIR=${GOG_WORKDIR:-}
PYTHON=${GOG_PYTHON:-python3.11}
JAX_EXTRA=${GOG_JAX_EXTRA:-tpu}
LOG_WORKER=0
SPOT=0
KEEP=0
parse_flags "project zone accelerator runtime name config workdir python jax-extra log-worker" "spot keep" "$@"
((${#ARGS[@]})) || {
  usage >&2
  exit 2
}
[[ -n $ZONE ]] || die "--zone is required (or GOG_ZONE)"

TPU=(gcloud compute tpus tpu-vm)
WHERE=("--zone=$ZONE")
[[ -z $PROJECT ]] || WHERE+=("--project=$PROJECT")
TARBALL=${TMPDIR:-/tmp}/gog_jax-$NAME.tar.gz

GCS_MOUNT=gcs  # the workdir bucket's mount point, in the home directory of every worker

# Runs a shell command on every worker of the slice (in the home directory).
on_all() {
  run "${TPU[@]}" ssh "$NAME" "${WHERE[@]}" --worker=all --command="$1"
}

create_slice() {
  local spot=()
  ((SPOT)) && spot=(--spot)
  run "${TPU[@]}" create "$NAME" "${WHERE[@]}" --accelerator-type="$ACCELERATOR" --version="$RUNTIME" "${spot[@]}"
}

install_repo() {
  # A tarball of the checkout as it is now (uncommitted edits included, .venv and the like not).
  run bash -c 'git -C "$1" ls-files -co --exclude-standard -z | tar -czf "$2" -C "$1" --null -T -' \
    pack "$ROOT" "$TARBALL"
  run "${TPU[@]}" scp "$TARBALL" "$NAME:gog_jax.tar.gz" "${WHERE[@]}" --worker=all
  local py jax
  py=$(quote "$PYTHON")
  jax=$(quote "jax[$JAX_EXTRA]==$(pinned_version "$ROOT/setup.py" jax)")
  # TPU VM images ship an older Python than setup.py's >=3.11: install one if it is missing.
  # gcsfuse from Google's apt repository, the way its installation guide does it.
  local key=/usr/share/keyrings/cloud.google.asc gcsfuse
  gcsfuse="command -v gcsfuse >/dev/null || { curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg"
  gcsfuse+=" | sudo tee $key >/dev/null && echo \"deb [signed-by=$key] https://packages.cloud.google.com/apt"
  gcsfuse+=" gcsfuse-\$(lsb_release -cs) main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null"
  gcsfuse+=" && sudo apt-get update -q && sudo apt-get install -y -q gcsfuse; }"
  on_all "$py -c 'import ensurepip' 2>/dev/null || { sudo apt-get update -q && sudo apt-get install -y -q $py $py-venv; } \
&& { $gcsfuse; } \
&& mkdir -p gog_jax && tar -xzf gog_jax.tar.gz -C gog_jax && cd gog_jax \
&& $py -m venv .venv && .venv/bin/pip install -q -e . $jax"
}

start_job() {
  [[ $WORKDIR =~ ^gs://([^/]+)(/.*)?$ ]] || die "--workdir must be a gs:// path (worker disks are deleted with the slice)"
  local bucket=${BASH_REMATCH[1]} path=${BASH_REMATCH[2]} job
  # The job runs in ~/gog_jax, so ../$GCS_MOUNT is the bucket on every worker.
  job=$(quote_all .venv/bin/python -m gog_jax.main "--config=$CONFIG" "--workdir=../$GCS_MOUNT$path" \
    --config.distributed=true "${EXTRA[@]}")
  # Only the job goes to the background (its pid, not a subshell's, lands in ~/gog_jax.pid).
  on_all "mkdir -p $GCS_MOUNT && { mountpoint -q $GCS_MOUNT || gcsfuse --implicit-dirs $(quote "$bucket") $GCS_MOUNT; } \
&& cd gog_jax && { nohup $job > ../gog_jax.log 2>&1 < /dev/null & echo \$! > ../gog_jax.pid; }"
}

stream_logs() {
  # shellcheck disable=SC2016  # expanded on the worker, not here
  run "${TPU[@]}" ssh "$NAME" "${WHERE[@]}" --worker="$LOG_WORKER" \
    --command='tail -n +1 -f --pid="$(cat gog_jax.pid)" gog_jax.log'
}

stop_job() {
  # shellcheck disable=SC2016  # expanded on the worker, not here
  on_all 'if [ -f gog_jax.pid ]; then kill "$(cat gog_jax.pid)" 2>/dev/null || true; fi'
}

delete_slice() {
  run "${TPU[@]}" delete "$NAME" "${WHERE[@]}" --quiet
}

for command in "${ARGS[@]}"; do
  case $command in
    create) create_slice ;;
    install) install_repo ;;
    run) start_job ;;
    logs) stream_logs ;;
    stop) stop_job ;;
    delete) delete_slice ;;
    all)
      create_slice
      install_repo
      start_job
      stream_logs
      ((KEEP)) || delete_slice
      ;;
    *) die "unknown command '$command' (see --help)" ;;
  esac
done
