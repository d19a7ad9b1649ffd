#!/usr/bin/env bash
# ZeRO-1 (dist.zero=1) against the unsharded optimizer on 1, 2 and 3 ranks (the digits MLP, AdamW
# with clipping): the same parameters within float tolerance (bit for bit on 1 rank), two runs with
# the same W bit for bit, 1/W of the optimizer state on each rank, and checkpoints that cross
# between ZeRO and not and between world sizes: ZeRO on 2 ranks resumed unsharded on 3, unsharded
# on 3 resumed with ZeRO on 2.
source "$(dirname "$0")/lib.sh"
data="$WORK/digits.h5"
"$TERN_BIN/tern-data" convert --input data/digits.csv --output "$data" >/dev/null
steps=300 half=150
cfg=(--config configs/digits_mlp.ini --data.path="$data" --train.steps=$steps --train.eval_every=0
  --run.progress=off --checkpoint.every_steps=$half --checkpoint.async=false)

train() {  # train NAME NP ZERO ARGS...: run dir $WORK/NAME, checkpoints in $WORK/ckpt-NAME
  local name=$1 np=$2 zero=$3
  shift 3
  launch "$np" "$TERN_BIN/tern-train" "${cfg[@]}" --dist.zero="$zero" --run.dir="$WORK/$name" \
    --checkpoint.uri="$WORK/ckpt-$name" "$@" >"$WORK/$name.log" 2>&1 ||
    fail "$name ($np rank(s), dist.zero=$zero) failed: $(tail -5 "$WORK/$name.log")"
}
distance() { "$TERN_BIN/tern-ckpt" compare "$WORK/ckpt-$1" "$WORK/ckpt-$2" | sed 's/.*relative distance \([^,]*\),.*/\1/'; }
below() { python3 -c "import sys; sys.exit(0 if float('$1') < float('$2') else 1)"; }

expect_exit 2 "dist.zero" "$TERN_BIN/tern-train" "${cfg[@]}" --dist.zero=2 --run.dir="$WORK/bad"

for np in 1 2 3; do
  train "u$np" $np 0
  train "z$np" $np 1
  train "z${np}b" $np 1
  a=$(done_field "$WORK/z$np" param_checksum)
  b=$(done_field "$WORK/z${np}b" param_checksum)
  [ "$a" = "$b" ] && pass "$np rank(s): two ZeRO-1 runs bit-identical ($a)" ||
    fail "$np rank(s): ZeRO-1 runs differ: $a vs $b"
  if [ "$np" = 1 ]; then
    u=$(done_field "$WORK/u1" param_checksum)
    [ "$a" = "$u" ] && pass "1 rank: ZeRO-1 bit-identical to unsharded ($u)" ||
      fail "1 rank: ZeRO-1 $a, unsharded $u"
  fi
  d=$(distance "z$np" "u$np")
  below "$d" 1e-5 && pass "$np rank(s): ZeRO-1 parameters within $d (relative) of unsharded" ||
    fail "$np rank(s): ZeRO-1 parameters $d from unsharded"
  lz=$(done_field "$WORK/z$np" train_loss)
  lu=$(done_field "$WORK/u$np" train_loss)
  d=$(python3 -c "print(abs($lz - $lu) / $lu)")
  below "$d" 1e-5 && pass "$np rank(s): train_loss $lz, unsharded $lu" ||
    fail "$np rank(s): train_loss $lz, unsharded $lu (relative $d)"
  # Rank 0's slice: 1/W of the state, up to the 16-element alignment of the slices.
  mz=$(done_field "$WORK/z$np" optimizer_state_mb)
  mu=$(done_field "$WORK/u$np" optimizer_state_mb)
  python3 -c "import sys; sys.exit(0 if abs($mz * $np / $mu - 1) < 0.01 else 1)" &&
    pass "$np rank(s): optimizer state per rank $mz MB with ZeRO-1, $mu MB without" ||
    fail "$np rank(s): optimizer state per rank $mz MB with ZeRO-1, $mu MB without (want 1/$np)"
done

folder=$(printf 'ckpt/step-%08d' $half)
# Each rank wrote its slice of each buffer; the manifest lists them in the order of the state.
for f in params.shard-00000-of-00002.bin optim.m.shard-00001-of-00002.bin optim.v.shard-00000-of-00002.bin; do
  [ -f "$WORK/ckpt-z2/$folder/$f" ] && pass "ZeRO-1 checkpoint has $f" || fail "ZeRO-1 checkpoint lacks $f: $(ls "$WORK/ckpt-z2/$folder")"
done

resume() {  # resume NAME NP ZERO FROM: NAME resumes FROM's checkpoint of step $half
  train "$1" "$2" "$3" --checkpoint.resume="$WORK/ckpt-$4/$folder"
  grep -q "resumed from .*step $half, written by" "$WORK/$1.log" &&
    pass "$1: resumed $4's step $half on $2 rank(s), dist.zero=$3" ||
    fail "$1: did not resume $4's step $half: $(grep -i resum "$WORK/$1.log" | head -3)"
}
resume z2-u3 3 0 z2
d=$(distance z2-u3 z2)
below "$d" 1e-5 && pass "ZeRO-1 on 2 ranks -> unsharded on 3: within $d (relative) of the uninterrupted run" ||
  fail "ZeRO-1 on 2 ranks -> unsharded on 3: relative distance $d"
resume u3-z2 2 1 u3
d=$(distance u3-z2 u3)
below "$d" 1e-5 && pass "unsharded on 3 ranks -> ZeRO-1 on 2: within $d (relative) of the uninterrupted run" ||
  fail "unsharded on 3 ranks -> ZeRO-1 on 2: relative distance $d"
resume z3-z2 2 1 z3
d=$(distance z3-z2 z3)
below "$d" 1e-5 && pass "ZeRO-1 on 3 ranks -> ZeRO-1 on 2: within $d (relative)" ||
  fail "ZeRO-1 on 3 ranks -> ZeRO-1 on 2: relative distance $d"
finish
