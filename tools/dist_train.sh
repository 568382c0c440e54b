#!/usr/bin/env bash
# bash tools/dist_train.sh CONFIG NUM_PROCESSES [train.py options]
# One process per GPU (nccl); on a machine without CUDA, NUM_PROCESSES CPU processes (gloo).
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT as for torchrun. PYTHON picks the interpreter.
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}

PYTHONPATH="$(dirname $0)/..":$PYTHONPATH \
"$PYTHON" -m torch.distributed.run \
    --nnodes=$NNODES \
    --node_rank=$NODE_RANK \
    --master_addr=$MASTER_ADDR \
    --nproc_per_node=$GPUS \
    --master_port=$PORT \
    $(dirname "$0")/train.py \
    $CONFIG \
    --launcher pytorch ${@:3}
