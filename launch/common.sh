# shellcheck shell=bash
# Helpers shared by launch/*.sh: flag parsing, and running a command or, with --dry-run,
# printing it. Dry-run output is a transcript that pastes back into a shell (and that the
# tests split with shlex), so every step can be read, checked, or run by hand.

DRY_RUN=0
ARGS=()   # positional arguments: the subcommands, in order
EXTRA=()  # everything after `--`: passed on to the main job

die() {
  echo "error: $*" >&2
  exit 1
}

# A word as the shell needs to read it back: bare when safe, single-quoted otherwise.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf '%s' "${1@Q}"
  fi
}

quote_all() {
  local word out=()
  for word in "$@"; do
    out+=("$(quote "$word")")
  done
  printf '%s' "${out[*]}"
}

# Runs "$@" (echoed to stderr first), or with --dry-run prints it to stdout.
run() {
  if ((DRY_RUN)); then
    quote_all "$@"
    echo
  else
    echo "+ $(quote_all "$@")" >&2
    "$@"
  fi
}

# Writes $2 to the file $1, or with --dry-run prints the here-document that would.
write_file() {
  if ((DRY_RUN)); then
    printf 'cat > %s <<'\''EOF'\''\n%s\nEOF\n' "$(quote "$1")" "$2"
  else
    mkdir -p "$(dirname "$1")"
    printf '%s\n' "$2" >"$1"
  fi
}

# parse_flags "value flags" "boolean flags" "$@"
# --some-flag=V or --some-flag V sets SOME_FLAG=V; a boolean --some-flag sets SOME_FLAG=1;
# --dry-run sets DRY_RUN=1; -h/--help calls the script's usage(); other words go to ARGS.
parse_flags() {
  local values=" $1 " bools=" $2 dry-run " name value
  shift 2
  while (($#)); do
    case $1 in
      -h | --help)
        usage
        exit 0
        ;;
      --)
        shift
        # shellcheck disable=SC2034  # read by the sourcing script
        EXTRA=("$@")
        break
        ;;
      --*)
        name=${1#--}
        value=
        if [[ $name == *=* ]]; then
          value=${name#*=}
          name=${name%%=*}
          [[ $values == *" $name "* ]] || die "--$name takes no value"
        elif [[ $bools == *" $name "* ]]; then
          value=1
        elif [[ $values == *" $name "* ]]; then
          (($# > 1)) || die "--$name needs a value"
          value=$2
          shift
        else
          die "unknown flag --$name (see --help)"
        fi
        name=${name//-/_}
        printf -v "${name^^}" '%s' "$value"
        ;;
      *) ARGS+=("$1") ;;
    esac
    shift
  done
}

# pinned_version SETUP_PY PACKAGE: the version setup.py pins (jax -> 0.10.2), so the
# accelerator extra installed on a cluster never drifts from the tested pin.
pinned_version() {
  sed -n "s/.*\"$2==\([^\"]*\)\".*/\1/p" "$1" | head -n 1
}
