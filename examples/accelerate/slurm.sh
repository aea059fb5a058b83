#!/bin/bash
# Any lychee-hf command on SLURM nodes with one process per GPU (DDP across nodes):
#   sbatch examples/accelerate/slurm.sh compress --model M --corpus docs.jsonl --out /shared/banks/
#   sbatch --nodes 4 examples/accelerate/slurm.sh train-rl --model M --data rows.jsonl --out /shared/trained/
# srun starts one `accelerate launch` per node; each starts GPUS_PER_NODE processes. The first node of the job
# is the rendezvous host. Output folders must be on storage that every node sees.
#SBATCH --job-name=lychee-hf
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

export GPUS_PER_NODE=${GPUS_PER_NODE:-8}
export MAIN_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MAIN_PORT=${MAIN_PORT:-29500}
CONFIG=${ACCELERATE_CONFIG:-examples/accelerate/multi_node.yaml}

# Single quotes: SLURM_NODEID differs per node, so each task expands it itself.
srun --kill-on-bad-exit=1 bash -c 'accelerate launch --config_file "$0" \
    --num_machines "$SLURM_NNODES" --num_processes "$((SLURM_NNODES * GPUS_PER_NODE))" \
    --machine_rank "$SLURM_NODEID" --main_process_ip "$MAIN_HOST" --main_process_port "$MAIN_PORT" \
    -m lychee_hf.cli "$@"' "$CONFIG" "$@"
