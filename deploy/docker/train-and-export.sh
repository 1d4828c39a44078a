#!/bin/sh
# The trainer image's default command: retrain, then export the best checkpoint into the mounted
# models/ folder. Arguments go to `training train` (for example --epochs 5 or --data-dir DIR).
set -eu
python -m training train --out-dir runs/fashion-mnist "$@"
exec python -m training export runs/fashion-mnist/best.pt --out models/fashion-mnist/model.onnx
