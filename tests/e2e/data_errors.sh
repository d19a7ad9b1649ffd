#!/usr/bin/env bash
# Data errors give exit code 2 and name the file, the dataset and the first bad row.
source "$(dirname "$0")/lib.sh"
train="$TERN_BIN/tern-train"
"$TERN_BIN/tern_make_bad_data" "$WORK"
run() { "$train" --config configs/digits_mlp.ini --train.steps=5 --data.path="$1"; }

expect_exit 2 "dataset /train/x: row 5, column 3 is NaN" run "$WORK/nan.h5"
expect_exit 2 "dataset /train/x: rows have 63 features, the model expects 64" run "$WORK/shape.h5"
expect_exit 2 "dataset /train/y: row 9 has label 10, outside [0, 10)" run "$WORK/label.h5"
expect_exit 2 "dataset /val/y: expected integer class labels, found float" run "$WORK/dtype.h5"
expect_exit 2 "'$WORK/absent.h5' is missing or is not an HDF5 file" run "$WORK/absent.h5"
# Streamed (rank 0 reads the file through once and every rank stops alike), the same messages.
stream() { launch 2 "$train" --config configs/digits_mlp.ini --train.steps=5 --data.stream=on --data.path="$1"; }
expect_exit 2 "dataset /train/x: row 5, column 3 is NaN" stream "$WORK/nan.h5"
expect_exit 2 "dataset /train/x: rows have 63 features, the model expects 64" stream "$WORK/shape.h5"
expect_exit 2 "dataset /train/y: row 9 has label 10, outside [0, 10)" stream "$WORK/label.h5"
expect_exit 2 "dataset /val/y: expected integer class labels" stream "$WORK/dtype.h5"

printf '1,2,3\n4,x,6\n' > "$WORK/bad.csv"
expect_exit 2 "bad.csv:2, column 2: 'x' is not a finite number" "$TERN_BIN/tern-data" convert --input "$WORK/bad.csv" --output "$WORK/o.h5"
printf '1,2,3\n4,5\n' > "$WORK/ragged.csv"
expect_exit 2 "ragged.csv:2: 2 fields, expected 3" "$TERN_BIN/tern-data" convert --input "$WORK/ragged.csv" --output "$WORK/o.h5"
printf '1,2,3.5\n' > "$WORK/label.csv"
expect_exit 2 "label '3.5' is not a non-negative integer" "$TERN_BIN/tern-data" convert --input "$WORK/label.csv" --output "$WORK/o.h5"

# Text to tokens: the corpus tern-data writes, invalid UTF-8 named by its byte offset.
expect_exit 0 "vocabulary of 65" "$TERN_BIN/tern-data" text --input data/tinyshakespeare.txt --output "$WORK/tokens.h5"
expect_exit 0 "First Citizen:" "$TERN_BIN/tern-data" info "$WORK/tokens.h5"
printf 'ab\xffcd' > "$WORK/bad.txt"
expect_exit 2 "invalid UTF-8 at byte 2 (byte 0xff)" "$TERN_BIN/tern-data" text --input "$WORK/bad.txt" --output "$WORK/o.h5"
expect_exit 2 "is a token corpus: set data.block_size" run "$WORK/tokens.h5"
finish
