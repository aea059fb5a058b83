"""The shipped accelerate configs and the SLURM script: they parse as accelerate launch reads them, name classes
our models have, and start one launcher per node with its own rank."""

import os
import subprocess
from pathlib import Path

import pytest
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils.launch import prepare_multi_gpu_env

from lychee_hf.testing import tiny_lychee

EXAMPLES = Path(__file__).parent.parent / "examples" / "accelerate"


def launch_args(config: str):
    parser = launch_command_parser()
    args = parser.parse_args(["--config_file", str(EXAMPLES / config), "-m", "lychee_hf.cli", "ask", "--help"])
    return _validate_launch_command(args)[0]


@pytest.mark.parametrize(
    "config, multi_gpu, fsdp, machines, processes",
    [
        ("single_gpu.yaml", False, False, 1, 1),
        ("multi_gpu.yaml", True, False, 1, 8),
        ("multi_node.yaml", True, False, 2, 16),
        ("fsdp_7b.yaml", False, True, 1, 8),
    ],
)
def test_accelerate_configs_launch_as_they_say(config, multi_gpu, fsdp, machines, processes):
    args = launch_args(config)
    assert (args.multi_gpu, args.use_fsdp, args.num_machines, args.num_processes) == (
        multi_gpu,
        fsdp,
        machines,
        processes,
    )


def test_fsdp_config_wraps_classes_of_a_lychee_qwen2_model():
    environment = prepare_multi_gpu_env(launch_args("fsdp_7b.yaml"))
    assert environment["ACCELERATE_USE_FSDP"] == "true" and environment["FSDP_VERSION"] == "2"
    classes = {type(module).__name__ for module in tiny_lychee("qwen2").modules()}
    assert set(environment["FSDP_TRANSFORMER_CLS_TO_WRAP"].split(",")) <= classes


def test_slurm_script_starts_one_launcher_per_node_with_its_rank(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    scripts = {
        "scontrol": 'printf "node-a\\nnode-b\\n"',
        # srun: run the command once per node, as SLURM would, with that node's id
        "srun": 'while [[ "$1" == --* ]]; do shift; done\n'
        'for id in $(seq 0 $((SLURM_NNODES - 1))); do SLURM_NODEID=$id "$@"; done',
        "accelerate": 'printf "%s|" "$@" >> "$CALLS"; echo >> "$CALLS"',  # one line per call, "|" between args
    }
    for name, body in scripts.items():
        (fake / name).write_text("#!/bin/bash\n" + body + "\n")
        (fake / name).chmod(0o755)
    environment = {
        **os.environ,
        "PATH": f"{fake}:{os.environ['PATH']}",
        "SLURM_NNODES": "2",
        "SLURM_JOB_NODELIST": "node-[a-b]",
        "CALLS": str(tmp_path / "calls.txt"),
    }
    subprocess.run(
        ["bash", str(EXAMPLES / "slurm.sh"), "eval", "--task", "niah", "--out", "my dir"],
        env=environment,
        check=True,
        cwd=EXAMPLES.parent.parent,
    )
    calls = [line.split("|")[:-1] for line in (tmp_path / "calls.txt").read_text().splitlines()]
    config = ["--config_file", "examples/accelerate/multi_node.yaml", "--num_machines", "2", "--num_processes", "16"]
    assert calls == [
        [
            "launch",
            *config,
            "--machine_rank",
            str(rank),
            "--main_process_ip",
            "node-a",
            "--main_process_port",
            "29500",
            "-m",
            "lychee_hf.cli",
            "eval",
            "--task",
            "niah",
            "--out",
            "my dir",
        ]  # fmt: skip
        for rank in (0, 1)
    ]
