#!/usr/bin/env bash
# Config errors give exit code 2 and name the key, the value and the file.
source "$(dirname "$0")/lib.sh"
train="$TERN_BIN/tern-train"
ini="$WORK/bad.ini"

cat configs/digits_mlp.ini > "$ini"
printf '[optim]\nlearnig_rate = 0.1\n' >> "$ini"
expect_exit 2 "unknown key 'optim.learnig_rate' (value '0.1')" "$train" --config "$ini"
expect_exit 2 "$ini" "$train" --config "$ini"

sed 's/^steps = .*/steps = many/' configs/digits_mlp.ini > "$ini"
expect_exit 2 "('many') for option 'train.steps' is invalid" "$train" --config "$ini"
expect_exit 2 "$ini" "$train" --config "$ini"

expect_exit 2 "train.batch_size=-4 (from command line): must be >= 1" "$train" --config configs/digits_mlp.ini --train.batch_size=-4
expect_exit 2 "command line: unknown key 'train.stepz' (value '3')" "$train" --config configs/digits_mlp.ini --train.stepz=3
expect_exit 2 "config file '/nonexistent/digits.ini' cannot be read" "$train" --config /nonexistent/digits.ini
expect_exit 2 "optim.name=adam (from command line): expected adamw or sgd" "$train" --config configs/digits_mlp.ini --optim.name=adam
expect_exit 2 "model.layer 1 (conv9 k=3): unknown layer type 'conv9'" "$train" --config configs/digits_mlp.ini --model.layer="linear out=10" --model.layer="conv9 k=3"
expect_exit 2 "unknown argument 'widht' for layer type linear" "$train" --config configs/digits_mlp.ini --model.layer="linear out=10 widht=3"
# Devices and precision: bad values, and asking for what this machine or build lacks.
expect_exit 2 "run.device=gpu (from command line): expected auto, cpu or cuda" "$train" --config configs/digits_mlp.ini --run.device=gpu
expect_exit 2 "run.precision=fp16 (from command line): expected fp32 or bf16" "$train" --config configs/digits_mlp.ini --run.precision=fp16
expect_exit 2 "dist.backend=gloo (from command line): expected auto, nccl, mpi or none" "$train" --config configs/digits_mlp.ini --dist.backend=gloo
expect_exit 2 "run.precision=bf16 needs a GPU" "$train" --config configs/digits_mlp.ini --run.device=cpu --run.precision=bf16
expect_exit 2 "dist.backend=nccl needs a GPU" "$train" --config configs/digits_mlp.ini --run.device=cpu --dist.backend=nccl
if ! nvidia-smi -L >/dev/null 2>&1; then
  expect_exit 2 "run.device=cuda: " "$train" --config configs/digits_mlp.ini --run.device=cuda
fi
# The CUDA backend is a module loaded at run time: one that cannot be loaded is named.
if [ -f "$TERN_BIN/../lib/libtern_cuda.so" ]; then
  expect_exit 2 "libtern_cuda.so cannot be loaded (tried /nonexistent/libtern_cuda.so)" \
    env TERN_CUDA_LIBRARY=/nonexistent/libtern_cuda.so "$train" --config configs/digits_mlp.ini \
    --run.device=cuda
fi
# Store URIs are parsed once, before anything runs: a bad one is a usage error naming the key.
expect_exit 2 "checkpoint.uri=ftp://host/ckpt (from command line): unknown scheme ftp://" \
  "$train" --config configs/digits_mlp.ini --checkpoint.uri=ftp://host/ckpt
expect_exit 2 "checkpoint.uri=s3:// (from command line): names no bucket" \
  "$train" --config configs/digits_mlp.ini --checkpoint.uri=s3://
expect_exit 2 "checkpoint.resume=s3://b/run (from command line): expected auto, never or the URI of a checkpoint folder" \
  "$train" --config configs/digits_mlp.ini --checkpoint.resume=s3://b/run
expect_exit 2 "server.model_repository=gs://models (from command line): unknown scheme gs://" \
  "$TERN_BIN/tern-serve" --model-repository=gs://models
expect_exit 2 "store URI 'ftp://host/ckpt': unknown scheme ftp://" "$TERN_BIN/tern-ckpt" list ftp://host/ckpt
expect_exit 0 "--train.batch_size" "$train" --help
expect_exit 0 "(=1000)" "$train" --help
expect_exit 0 "tern-train 0." "$train" --version
expect_exit 2 "unknown command 'frobnicate'" "$TERN_BIN/tern-data" frobnicate
finish
